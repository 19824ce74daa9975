"""One Services per process: the client, the gateway and the commands share its pieces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.contracts import BASE_VARIANT, FINE_TUNED_VARIANT
from producers import Client
from producers.commands.rollout import rollout_control
from producers.commands.sweep import sweeper
from producers.gateway.service import Gateway
from producers.services import Services
from tests.producers.conftest import FINE_TUNED_ADVISOR, beat, make_settings, photo

ACTOR = "test@host"


@pytest.fixture
def services(
    tmp_path: Path, sqlite_db: str, registry_file: Path, redis_url: str
) -> Iterator[Services]:
    # A long weights cache: only a shared router sees a change at once.
    settings = make_settings(
        tmp_path, sqlite_db, registry_file, redis_url, weights_cache_seconds=600
    )
    with Services(settings) as built:
        yield built


def test_the_gateway_and_its_client_share_one_engine_router_and_broker(
    services: Services, sqlite_db: str
) -> None:
    gateway = Gateway.of(services)
    assert gateway.engine is services.engine
    assert gateway.repository is services.repository
    assert gateway.rollouts.router is services.router
    assert gateway.rollouts.outbox is services.outbox
    assert gateway.broker is services.broker
    beat(sqlite_db, FINE_TUNED_VARIANT)
    before = gateway.client.submit(photo(1), FINE_TUNED_ADVISOR, subject="u1")
    assert before.variant == BASE_VARIANT
    # A split changed through the gateway's rollout control reaches its client's very next
    # submit, within a 600 s weights cache: they hold the one router, which it invalidated.
    gateway.rollouts.set_weights(
        FINE_TUNED_ADVISOR, {FINE_TUNED_VARIANT: 1.0}, reason="t", actor=ACTOR
    )
    after = gateway.client.submit(photo(2), FINE_TUNED_ADVISOR, subject="u1")
    assert after.variant == FINE_TUNED_VARIANT


def test_a_client_given_services_sees_the_commands_weight_change_at_once(
    services: Services, sqlite_db: str
) -> None:
    client = Client(services=services)
    beat(sqlite_db, FINE_TUNED_VARIANT)
    assert client.submit(photo(3), FINE_TUNED_ADVISOR).variant == BASE_VARIANT
    rollout_control(services).set_weights(
        FINE_TUNED_ADVISOR, {FINE_TUNED_VARIANT: 1.0}, reason="t", actor=ACTOR
    )
    assert client.submit(photo(4), FINE_TUNED_ADVISOR).variant == FINE_TUNED_VARIANT


def test_the_sweep_publishes_through_the_same_outbox_and_broker(services: Services) -> None:
    sweep = sweeper(services)
    assert sweep.outbox is services.outbox
    assert sweep.broker is services.broker
    assert sweep.repository is services.repository


def test_reading_a_job_makes_no_broker_app_and_close_releases_the_one_made(
    services: Services,
) -> None:
    client = Client(services=services)
    handle_less = services.repository.find()
    assert handle_less == []
    assert "publisher" not in vars(services)  # status and wait need no broker
    handle = client.submit(photo(5), FINE_TUNED_ADVISOR)
    assert client.status(handle.id).published_at is not None
    first = services.broker
    assert services.broker is first  # one app and pool per Services
    services.close()
    assert "publisher" not in vars(services) and "outbox" not in vars(services)
    assert services.broker is not first  # used after close: a fresh one, not a closed one


def test_a_client_closes_only_the_services_it_built(services: Services) -> None:
    shared = Client(services=services)
    broker = services.broker
    shared.close()
    assert services.broker is broker  # the gateway's pool outlives a borrowed client
    own = Client(services.settings)
    own.close()
    assert services.broker is broker
