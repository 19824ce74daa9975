"""Test support: the one stack helper (worker and gateway subprocesses) and the commands a
test runs; the waits (tests/waits.py) are re-exported here."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from PIL import Image
from sqlalchemy.exc import OperationalError

from jobs.settings import Settings
from store.db import engine_for
from store.models import Job
from store.repository import Repository
from tests import forkserver
from tests.waits import eventually as eventually
from tests.waits import wait_generating as wait_generating
from tests.waits import wait_until_final as wait_until_final

WORKER_BIN = [sys.executable, "-m", "advisor_worker.cli"]
GATEWAY_BIN = [str(Path(sys.executable).parent / "advisor-gateway")]

# Names whose use starts a process: a worker, the gateway, a server, a command or any other
# subprocess. tests/conftest.py marks every test that reaches one of them (directly, through a
# tests/ helper or through a fixture) `slow`, so `make test-fast` runs in-process tests only.
SUBPROCESS_STARTERS = frozenset(
    {
        "start_worker", "running_workers", "start_workers", "start_processes", "start_gateway",
        "wait_until_ready", "running_flower", "PostgresCluster", "RedisServer", "Network",
        "GATEWAY_BIN", "WORKER_BIN", "script", "run_command", "start_command", "fork_module",
        "run_module",
    }
)  # fmt: skip


def jpeg(seed: int, size: tuple[int, int] = (96, 64)) -> bytes:
    """A small photo-like JPEG, different for every seed."""
    img = Image.effect_mandelbrot(size, (-2 + seed * 0.01, -1, 1, 1), 30).convert("RGB")
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG")
    return buffer.getvalue()


def script(name: str) -> list[str]:
    """argv prefix running console script `name` (pyproject) as installed, from this tree."""
    from tests.deploy_support import SCRIPTS

    module, func = SCRIPTS[name].split(":")
    code = f"import sys; from {module} import {func}; sys.argv[0] = {name!r}; sys.exit({func}())"
    return [sys.executable, "-c", code]


Started = subprocess.Popen[bytes] | forkserver.ForkedProcess  # a process a test started


def run_command(
    module: str,
    args: list[str],
    env: dict[str, str],
    *,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m module *args` run to its end, output captured as text.

    Forked from the test process's fork server when the environment allows (tests/forkserver.py).
    """
    if forkserver.can_fork(env):
        return forkserver.run_module(module, args, env, timeout=timeout, cwd=cwd)
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def start_command(module: str, args: list[str], env: dict[str, str], log: Path) -> Started:
    """`python -m module *args`, output appended to `log`; not waited for (forked if allowed)."""
    if forkserver.can_fork(env):
        return forkserver.fork_module(module, args, env, log)
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", module, *args], env=env, stdout=handle, stderr=subprocess.STDOUT
        )


@dataclass
class Env:
    """ADVISOR_* variables for subprocesses (workers, CLI) of one test."""

    values: dict[str, str] = field(default_factory=dict)

    def full(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}
        env.update(self.values)
        env.update(extra)
        env.setdefault("HF_HUB_OFFLINE", "1")
        return env

    def settings(self) -> Settings:
        """The Settings a process started with this environment reads."""
        return Settings(**{k.removeprefix("ADVISOR_").lower(): v for k, v in self.values.items()})


@dataclass
class WorkerProcess:
    variant: str
    proc: Started
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 60) -> int:
        """Warm shutdown (SIGTERM): the current task finishes before the process exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def spawn_worker(env: Env, variant: str, log_dir: Path) -> WorkerProcess:
    """Start `advisor-worker run --variant V`, not waiting for it.

    Forked from the test process's fork server when the environment allows (tests/forkserver.py).
    """
    log = log_dir / f"worker-{variant}-{time.monotonic_ns()}.log"
    full = env.full()
    if forkserver.can_fork(full):
        forked = forkserver.fork_module(
            "advisor_worker.cli", ["run", "--variant", variant], full, log
        )
        return WorkerProcess(variant, forked, log)
    with log.open("wb") as handle:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*WORKER_BIN, "run", "--variant", variant],
            env=full,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    return WorkerProcess(variant, proc, log)


def start_worker(
    env: Env, variant: str, log_dir: Path, *, ready_timeout: float = 180
) -> WorkerProcess:
    """Start `advisor-worker run --variant V` and wait until its heartbeat row appears."""
    worker = spawn_worker(env, variant, log_dir)
    repo = Repository(engine_for(env.values["ADVISOR_DATABASE_URL"]))
    return wait_until_ready(worker, repo, ready_timeout)


def wait_until_ready(worker: WorkerProcess, repo: Repository, timeout: float) -> WorkerProcess:
    """Until the process has a heartbeat row and Celery logged `ready`; killed if it never does."""

    def ready() -> bool:
        if worker.proc.poll() is not None:
            raise AssertionError(
                f"worker {worker.variant} exited {worker.proc.returncode}:\n"
                f"{worker.output()[-3000:]}"
            )
        # OperationalError: a database a fault test has stopped, waited out
        beats = repo.live_workers(60, worker.variant)
        return any(hb.pid == worker.proc.pid for hb in beats) and "ready" in worker.output()

    try:
        eventually(f"worker {worker.variant} to be ready", ready, timeout, poll=0.3,
                   errors=(OperationalError,), context=lambda: worker.output()[-3000:])  # fmt: skip
    except AssertionError:
        worker.kill()  # a no-op on one that exited: it is never signalled again
        raise
    return worker


@contextmanager
def running_workers(env: Env, variants: list[str], log_dir: Path) -> Iterator[list[WorkerProcess]]:
    """Workers started together (their model loads overlap), each waited for, all stopped after."""
    workers = [spawn_worker(env, variant, log_dir) for variant in variants]
    try:
        repo = Repository(engine_for(env.values["ADVISOR_DATABASE_URL"]))
        for worker in workers:
            wait_until_ready(worker, repo, 180)
        yield workers
    finally:
        for worker in workers:
            worker.terminate()


@dataclass
class GatewayProcess:
    """The real `advisor-gateway` on a port of its own."""

    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)


def start_gateway(
    env: Env, log_dir: Path, port: int, ready_path: str = "/health"
) -> GatewayProcess:
    """Start `advisor-gateway --port P` and wait until `ready_path` answers."""
    log = log_dir / f"gateway-{port}.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [*GATEWAY_BIN, "--port", str(port)], env=env.full(), stdout=handle,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    gateway = GatewayProcess(proc, log, f"http://127.0.0.1:{port}")
    wait_for_http(gateway.url + ready_path, 60, proc, log)
    return gateway


def wait_for_http(
    url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Until `url` answers at all; a process that exits meanwhile fails with its log."""

    def answers() -> bool:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"process exited with {proc.returncode}:\n{tail}")
        httpx.get(url, timeout=2)
        return True

    eventually(f"{url} to answer", answers, timeout, errors=(httpx.TransportError,))


@dataclass
class Stack:
    """One test's services: the environment for subprocesses, matching Settings, its processes."""

    root: Path
    env: Env
    settings: Settings
    variant: str = "base"
    workers: list[WorkerProcess] = field(default_factory=list)
    gateway: GatewayProcess | None = None

    @property
    def repo(self) -> Repository:
        return Repository(engine_for(self.settings.resolved_database_url))

    @property
    def url(self) -> str:
        assert self.gateway is not None, "this stack runs no gateway"
        return self.gateway.url

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)  # type: ignore[arg-type]

    def gateway_output(self) -> str:
        return self.gateway.output() if self.gateway else ""

    def start_workers(
        self, count: int = 1, variant: str | None = None, *, ready_timeout: float = 180
    ) -> list[WorkerProcess]:
        """Start `count` workers at once (their loads overlap), then wait for each to be ready."""
        return self.start_processes([variant or self.variant] * count, ready_timeout=ready_timeout)

    def start_processes(
        self,
        variants: list[str],
        *,
        gateway_port: int | None = None,
        ready_path: str = "/health",
        ready_timeout: float = 180,
    ) -> list[WorkerProcess]:
        """Workers of `variants` (and a gateway) started together, then each waited for."""
        workers = [spawn_worker(self.env, variant, self.root) for variant in variants]
        self.workers.extend(workers)
        if gateway_port is not None:
            self.gateway = start_gateway(self.env, self.root, gateway_port, ready_path)
        for worker in workers:
            wait_until_ready(worker, self.repo, ready_timeout)
        return workers

    def submit(self, count: int, *, first_seed: int = 0) -> list[str]:
        """`count` photos for ansel on the stack's variant, through the client; all published."""
        from producers import Client

        with Client(self.settings) as client:
            handles = client.submit_many(
                [{"image": jpeg(first_seed + i), "advisor": "ansel", "variant": self.variant}
                 for i in range(count)]
            )  # fmt: skip
        assert all(h.published for h in handles), [h.publish_error for h in handles]
        return [h.id for h in handles]

    def stop(self, timeout: float = 60) -> None:
        """Workers get a warm shutdown, then the gateway stops."""
        for worker in self.workers:
            worker.terminate(timeout=timeout)
        if self.gateway is not None:
            self.gateway.terminate()


def most_at_once(jobs: list[Job]) -> int:
    """The largest number of jobs whose [started_at, completed_at] intervals overlap."""
    events: list[tuple[datetime, int]] = []
    for job in jobs:
        assert job.started_at is not None and job.completed_at is not None
        events += [(job.started_at, 1), (job.completed_at, -1)]
    running = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        most = max(most, running)
    return most
