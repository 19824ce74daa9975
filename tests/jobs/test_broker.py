"""The one queue-depth function on Redis, RabbitMQ and the embedded broker."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection
from kombu.transport.sqlalchemy import Channel as SqlaChannel

from jobs.broker import queue_depths
from jobs.contracts import ANALYZE_TASK
from jobs.errors import BrokerUnreachable
from tests.conftest import free_port


@pytest.fixture
def queues() -> list[str]:
    """Names no other test (or engineer sharing the broker) uses."""
    tag = uuid.uuid4().hex[:10]
    return [f"advisor.test-{tag}-a", f"advisor.test-{tag}-b", f"advisor.test-{tag}-absent"]


def app_for(url: str) -> Celery:
    return Celery("broker-test", broker=url, set_as_current=False)


def publish(url: str, counts: dict[str, int], *, priority: int | None = None) -> None:
    app = app_for(url)
    try:
        for queue, n in counts.items():
            for _ in range(n):
                app.send_task(ANALYZE_TASK, kwargs={}, queue=queue, priority=priority)
    finally:
        app.close()


@pytest.fixture
def rabbit_queues(rabbitmq_url: str, queues: list[str]) -> Iterator[list[str]]:
    yield queues
    with Connection(rabbitmq_url) as conn:
        channel = conn.channel()
        for queue in queues:
            channel.queue_delete(queue)
        channel.close()


def test_rabbitmq_depths_count_the_messages_published_and_an_absent_queue_reads_zero(
    rabbitmq_url: str, rabbit_queues: list[str]
) -> None:
    a, b, absent = rabbit_queues
    publish(rabbitmq_url, {a: 3, b: 1})
    app = app_for(rabbitmq_url)
    try:
        assert queue_depths(app, rabbit_queues) == {a: 3, b: 1, absent: 0}
    finally:
        app.close()


def test_redis_depths_count_messages_of_every_priority(redis_url: str) -> None:
    app = app_for(redis_url)
    try:
        for priority in (None, None, 6, 9):
            app.send_task(ANALYZE_TASK, kwargs={}, queue="advisor.base", priority=priority)
        app.send_task(ANALYZE_TASK, kwargs={}, queue="advisor.fine_tuned")
        client = redis.Redis.from_url(redis_url)
        try:
            # The prioritised ones live in lists of their own.
            assert client.llen("advisor.base") < 4
        finally:
            client.close()
        depths = queue_depths(app, ["advisor.base", "advisor.fine_tuned", "advisor.x"])
    finally:
        app.close()
    assert depths == {"advisor.base": 4, "advisor.fine_tuned": 1, "advisor.x": 0}


def test_embedded_depths_count_messages_and_fifty_probes_leave_no_connection_checked_out(
    tmp_path: Path, queues: list[str]
) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    a, b, absent = queues
    publish(url, {a: 2, b: 5})
    app = app_for(url)
    try:
        for _ in range(50):
            assert queue_depths(app, queues) == {a: 2, b: 5, absent: 0}
    finally:
        app.close()
    # kombu's SQLAlchemy transport caches one engine per database URL for the process.
    engine, _session = SqlaChannel._engines[f"sqlite:///{tmp_path / 'broker.db'}"]
    assert engine.pool.checkedout() == 0


@pytest.mark.parametrize(
    "url",
    [f"redis://127.0.0.1:{free_port()}/0", "sqla+sqlite:////nonexistent-dir/broker.db"],
    ids=["redis", "embedded"],
)
def test_an_unreachable_broker_raises_a_typed_error_naming_it(url: str) -> None:
    app = app_for(url)
    try:
        with pytest.raises(BrokerUnreachable, match=r"^broker .* unreachable \(\w+: .+\)$"):
            queue_depths(app, ["advisor.base"], timeout=1.0)
    finally:
        app.close()


_RACER = """
import sys, time
from kombu import Connection
import jobs.broker  # noqa: F401 - installs the multi-process-safe queue lookup
url, start, names = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
with Connection(url) as conn:
    channel = conn.channel()
    while time.time() < start:
        pass
    for name in names:
        channel._get_or_create(name)
"""


def test_processes_creating_the_same_embedded_queues_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with Connection(url) as conn:  # the tables exist before the race
        conn.channel()._get_or_create("warm-up")
    start = time.time() + 2.0
    names = [f"q{i}" for i in range(40)]
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACER, url, str(start), *names],
                         stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]  # fmt: skip
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [e[-800:] for e in errors if e]
