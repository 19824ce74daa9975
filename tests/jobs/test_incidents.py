"""One mapping from an internal failure to a client's text: its kind, from real failures."""

from __future__ import annotations

import logging
import socket

import pytest
from kombu import Connection
from sqlalchemy import create_engine, text

from jobs.errors import BrokerUnreachable
from jobs.incidents import CLIENT_TEXT, IncidentKind, incident, kind_of
from producers.errors import PublishFailed
from tests.conftest import free_port

PASSWORD = "pw-in-the-url"


def failure_of(call: object) -> BaseException:
    try:
        call()  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the failure is what the test reads
        return exc
    raise AssertionError("expected a failure")


def test_a_postgresql_a_redis_and_a_socket_failure_are_classed_by_where_they_come_from() -> None:
    port = free_port()
    engine = create_engine(f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:{port}/x")
    database = failure_of(lambda: engine.connect().execute(text("SELECT 1")))
    broker = failure_of(
        lambda: Connection(f"redis://:{PASSWORD}@127.0.0.1:{port}/0").ensure_connection(
            max_retries=1
        )
    )
    network = failure_of(lambda: socket.create_connection(("127.0.0.1", port), timeout=2))
    assert kind_of(database) == IncidentKind.DATABASE
    assert kind_of(database.__cause__ or database) == IncidentKind.DATABASE  # the driver's own
    assert kind_of(broker) == IncidentKind.BROKER
    assert kind_of(network) == IncidentKind.NETWORK
    assert kind_of(PublishFailed("x")) == kind_of(BrokerUnreachable("x")) == IncidentKind.BROKER
    assert kind_of(KeyError("mode")) == IncidentKind.INTERNAL


def test_the_client_reads_the_fixed_text_and_the_log_has_the_detail_under_its_reference(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    engine = create_engine(f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:{port}/x")
    exc = failure_of(lambda: engine.connect())
    with caplog.at_level(logging.WARNING):
        found = incident(exc, "a test")
    assert found.text == f"{CLIENT_TEXT[IncidentKind.DATABASE]} (reference {found.reference})"
    assert str(port) not in found.text and PASSWORD not in found.text
    [record] = [r for r in caplog.records if found.reference in r.getMessage()]
    assert str(port) in record.getMessage() and "a test" in record.getMessage()
    unexpected = incident(KeyError("mode"), "a test")
    assert unexpected.text.startswith("Internal error (reference ")
    assert any(unexpected.reference in r.getMessage() and r.exc_info for r in caplog.records)
