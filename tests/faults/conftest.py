"""Fault-test fixtures: a worker stack on a unique variant, private servers, the sweep, a tally."""

from __future__ import annotations

import io
import json
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy.exc import OperationalError

from advisor_worker.devtools.adapter_maker import write_random_adapter
from jobs.broker import make_celery
from jobs.contracts import FINAL_STATUSES, Status, queue_for
from jobs.settings import Settings
from producers import Client
from producers.commands.sweep import sweeper
from producers.ops.sweep import SweepReport
from producers.services import Services
from store import migrate
from store.db import engine_for
from store.models import Job
from store.repository import Repository
from tests.advisor_worker.conftest import tiny_model_dir  # noqa: F401 - a fixture, re-exported
from tests.faults.servers import PostgresCluster, RedisServer
from tests.support import WORKER_BIN, Env, WorkerProcess, wait_until_ready


@dataclass
class Stack:
    """One test's service: environment for worker subprocesses, matching Settings, a repository."""

    env: Env
    settings: Settings
    repo: Repository
    variant: str
    log_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_workers(self, count: int, *, ready_timeout: float = 120) -> list[WorkerProcess]:
        """Start `count` workers of the stack's variant at once, then wait for each to be ready."""
        workers = []
        for index in range(count):
            log = self.log_dir / f"worker-{self.variant}-{index}-{time.monotonic_ns()}.log"
            with log.open("wb") as handle:
                proc = subprocess.Popen(
                    [*WORKER_BIN, "run", "--variant", self.variant],
                    env=self.env.full(), stdout=handle, stderr=subprocess.STDOUT,
                )  # fmt: skip
            workers.append(WorkerProcess(self.variant, proc, log))
        self.workers.extend(workers)
        for worker in workers:
            wait_until_ready(worker, self.repo, ready_timeout)
        return workers

    def submit(self, count: int, *, first_seed: int = 0) -> list[str]:
        with Client(self.settings) as client:
            handles = client.submit_many(
                [{"image": photo(first_seed + i), "advisor": "ansel", "variant": self.variant}
                 for i in range(count)]
            )  # fmt: skip
        assert all(h.published for h in handles), [h.publish_error for h in handles]
        return [h.id for h in handles]


@pytest.fixture(scope="session")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return write_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "a", fmt="mlx")


@pytest.fixture
def make_stack(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
    adapter_dir: Path,
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
            "ADVISOR_TASK_TIME_LIMIT": "60",
            **{f"ADVISOR_{k.upper()}": v for k, v in overrides.items()},
        }
        settings = Settings(**{k.removeprefix("ADVISOR_").lower(): v for k, v in values.items()})
        stack = Stack(Env(values), settings, Repository(engine_for(database_url)), variant,
                      tmp_path)  # fmt: skip
        started.append(stack)
        return stack

    yield make
    for stack in started:
        for worker in stack.workers:
            worker.terminate(timeout=20)
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


def photo(seed: int) -> bytes:
    buffer = io.BytesIO()
    img = Image.effect_mandelbrot((96, 64), (-2 + seed * 0.01, -1, 1, 1), 30).convert("RGB")
    img.save(buffer, format="JPEG")
    return buffer.getvalue()


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


def wait_final(repo: Repository, ids: list[str], timeout: float) -> dict[str, Job]:
    """Until every job is final; a database outage meanwhile is waited out."""
    deadline = time.monotonic() + timeout
    jobs: dict[str, Job] = {}
    while time.monotonic() < deadline:
        try:
            jobs = {job.id: job for job in repo.find(Job.id.in_(ids))}
        except OperationalError:
            time.sleep(0.5)
            continue
        if len(jobs) == len(ids) and all(Status(j.status) in FINAL_STATUSES for j in jobs.values()):
            return jobs
        time.sleep(0.3)
    pending = {i: j.status for i, j in jobs.items() if Status(j.status) not in FINAL_STATUSES}
    raise AssertionError(f"{len(pending)} of {len(ids)} jobs not final after {timeout}s: "
                         f"{list(pending.items())[:5]}")  # fmt: skip


_RESULT = re.compile(r"advisor\.analyze (\S+) -> (\w+)")


@dataclass(frozen=True)
class Tally:
    sent: int
    finished: int  # reached succeeded or failed
    succeeded: int
    lost: int  # never reached a final status
    duplicated: int  # analysed to the end more than once (from the workers' logs)

    def line(self, name: str) -> str:
        return (f"{name}: sent={self.sent} finished={self.finished} succeeded={self.succeeded} "
                f"lost={self.lost} duplicated={self.duplicated}")  # fmt: skip


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
    )
