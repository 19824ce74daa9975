"""Fault-test fixtures: a worker stack on a unique variant, private servers, the sweep, a tally."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobs.broker import make_celery
from jobs.contracts import FINAL_STATUSES, Status, queue_for
from jobs.settings import Settings
from producers.commands.sweep import sweeper
from producers.ops.sweep import SweepReport
from producers.services import Services
from store import migrate
from store.db import engine_for
from store.models import Job
from store.repository import Repository
from tests.faults.servers import PostgresCluster, RedisServer
from tests.support import Env, Stack, WorkerProcess
from tests.support import jpeg as photo

__all__ = ["Stack", "photo"]  # the one stack helper and photo, as fault tests import them


@pytest.fixture
def make_stack(
    tmp_path: Path, tiny_model_dir: Path, adapter_dir: Path
) -> Iterator[Callable[..., Stack]]:
    """make_stack(database_url, broker_url, **ADVISOR_overrides) -> Stack; workers stopped after."""
    started: list[Stack] = []

    def make(database_url: str, broker_url: str, **overrides: str) -> Stack:
        migrate.upgrade(database_url)
        # A variant (so a queue) of its own: tests sharing one RabbitMQ never meet.
        variant = f"f{uuid.uuid4().hex[:10]}"
        registry = tmp_path / "registry.json"
        registry.write_text(json.dumps({"variants": {variant: {"adapter": str(adapter_dir)}}}))
        (tmp_path / "images").mkdir(exist_ok=True)
        values = {
            "ADVISOR_DATA_DIR": str(tmp_path / "data"),
            "ADVISOR_DATABASE_URL": database_url,
            "ADVISOR_BROKER_URL": broker_url,
            "ADVISOR_BASE_MODEL": str(tiny_model_dir),
            "ADVISOR_REGISTRY": str(registry),
            "ADVISOR_IMAGE_ROOTS": str(tmp_path / "images"),
            "ADVISOR_TEXT_LIMIT": "16",
            "ADVISOR_MAX_OUTPUT_TOKENS": "1500",
            "ADVISOR_HEARTBEAT_INTERVAL": "1",
            "ADVISOR_WORKER_LIVE_WINDOW": "8",
            # Room for a 1,000-token critique at B=4 with four test processes on two cores: the
            # 54 s soft limit of a 60 s one is within reach there (one job of the killed B=4
            # worker's four failed in a CI run). The tests of the limits set their own.
            "ADVISOR_TASK_TIME_LIMIT": "180",
            **{f"ADVISOR_{k.upper()}": v for k, v in overrides.items()},
        }
        env = Env(values)
        stack = Stack(tmp_path, env, env.settings(), variant)
        started.append(stack)
        return stack

    yield make
    for stack in started:
        stack.stop(timeout=20)
        if stack.settings.resolved_broker_url.startswith("amqp"):
            _delete_queue(stack.settings, stack.variant)


def _delete_queue(settings: Settings, variant: str) -> None:
    """The shared RabbitMQ keeps durable queues; leave no test queue behind."""
    app = make_celery(settings, "fault-cleanup")
    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(queue_for(variant))
        conn.default_channel.exchange_delete(queue_for(variant))
    app.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    engine_for(cluster.url).dispose()
    cluster.destroy()


@contextmanager
def sweeping(settings: Settings, interval: float = 0.5) -> Iterator[list[SweepReport]]:
    """The recovery sweep running in a thread, as Celery beat or `advisor sweep --loop` would."""
    stop = threading.Event()
    reports: list[SweepReport] = []
    services = Services(settings)
    thread = threading.Thread(
        target=sweeper(services).run_loop,
        kwargs={"interval": interval, "stop": stop, "on_round": reports.append},
        daemon=True,
    )
    thread.start()
    try:
        yield reports
    finally:
        stop.set()
        thread.join(timeout=60)
        services.close()


_RESULT = re.compile(r"advisor\.analyze (\S+) -> (\w+)")


@dataclass(frozen=True)
class Tally:
    sent: int
    finished: int  # reached succeeded or failed
    succeeded: int
    lost: int  # never reached a final status
    duplicated: int  # analysed to the end more than once (from the workers' logs)
    # Why each failed job failed (kind: error), shown in an assertion's diff; not compared.
    failures: tuple[str, ...] = field(default=(), compare=False)

    def line(self, name: str) -> str:
        return (f"{name}: sent={self.sent} finished={self.finished} succeeded={self.succeeded} "
                f"lost={self.lost} duplicated={self.duplicated} "
                f"failures={list(self.failures)}")  # fmt: skip


def tally(repo: Repository, ids: list[str], workers: list[WorkerProcess]) -> Tally:
    """Count outcomes; a job whose analysis was produced twice (recorded or discarded) is a dup."""
    jobs = {job.id: job for job in repo.find(Job.id.in_(ids))}
    produced: Counter[str] = Counter()
    for worker in workers:
        for job_id, result in _RESULT.findall(worker.output()):
            if result in ("succeeded", "lost_lease"):
                produced[job_id] += 1
    finished = [j for j in jobs.values() if Status(j.status) in FINAL_STATUSES]
    return Tally(
        sent=len(ids),
        finished=len(finished),
        succeeded=sum(1 for j in finished if j.status == Status.SUCCEEDED),
        lost=len(ids) - len(finished),
        duplicated=sum(1 for job_id in ids if produced[job_id] > 1),
        failures=tuple(
            f"{j.error_kind}: {(j.error or '')[:200]}"
            for j in finished
            if j.status == Status.FAILED
        ),  # fmt: skip
    )
