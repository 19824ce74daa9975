"""A closing Redis channel whose transport lost its connection does not raise: the worker lives."""

from __future__ import annotations

import logging

import pytest
from kombu import Connection

from advisor_worker import broker_guard


def _channel_with_an_unacked_message(url: str) -> tuple[Connection, object]:
    connection = Connection(url)
    channel = connection.default_channel
    channel.qos._delivered["tag-1"] = object()  # what a received, unacknowledged message leaves
    return connection, channel


def test_closing_a_detached_channel_with_unacked_messages_raises_without_the_guard(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu.transport import redis as kombu_redis

    monkeypatch.setattr(kombu_redis.QoS, "restore_unacked", broker_guard._upstream_restore)
    connection, channel = _channel_with_an_unacked_message(redis_url)
    channel._disconnect_pools()
    connection._do_close_transport()  # what a close that got there first leaves behind
    with pytest.raises(AttributeError, match="hostname"):
        channel.close()


def test_with_the_guard_the_close_logs_what_stays_unacked_and_returns(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from kombu.transport import redis as kombu_redis

    monkeypatch.setattr(kombu_redis.QoS, "restore_unacked", broker_guard._upstream_restore)
    broker_guard.install()
    broker_guard.install()  # idempotent
    connection, channel = _channel_with_an_unacked_message(redis_url)
    channel._disconnect_pools()
    connection._do_close_transport()
    with caplog.at_level(logging.WARNING, logger="advisor_worker.broker_guard"):
        channel.close()
    assert "1 unacknowledged message(s) stay in Redis's unacked set" in caplog.text
