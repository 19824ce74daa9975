"""Test support: real worker subprocesses and the environment pointing them at test services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from store.db import engine_for
from store.repository import Repository

WORKER_BIN = [sys.executable, "-m", "advisor_worker.cli"]


def script(name: str) -> list[str]:
    """argv prefix running console script `name` (pyproject) as installed, from this tree."""
    from tests.deploy_support import SCRIPTS

    module, func = SCRIPTS[name].split(":")
    code = f"import sys; from {module} import {func}; sys.argv[0] = {name!r}; sys.exit({func}())"
    return [sys.executable, "-c", code]


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


@dataclass
class WorkerProcess:
    variant: str
    proc: subprocess.Popen[bytes]
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


def start_worker(
    env: Env, variant: str, log_dir: Path, *, ready_timeout: float = 120
) -> WorkerProcess:
    """Start `advisor-worker run --variant V` and wait until its heartbeat row appears."""
    log = log_dir / f"worker-{variant}-{time.monotonic_ns()}.log"
    with log.open("wb") as handle:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*WORKER_BIN, "run", "--variant", variant],
            env=env.full(),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(variant, proc, log)
    repo = Repository(engine_for(env.values["ADVISOR_DATABASE_URL"]))
    return wait_until_ready(worker, repo, ready_timeout)


def wait_until_ready(worker: WorkerProcess, repo: Repository, timeout: float) -> WorkerProcess:
    """Until the process has a heartbeat row and Celery logged `ready`; killed if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise AssertionError(
                f"worker {worker.variant} exited {worker.proc.returncode}:\n"
                f"{worker.output()[-3000:]}"
            )
        live = [hb for hb in repo.live_workers(60, worker.variant) if hb.pid == worker.proc.pid]
        if live and "ready" in worker.output():
            return worker
        time.sleep(0.3)
    worker.kill()
    raise AssertionError(
        f"worker {worker.variant} not ready in {timeout}s:\n{worker.output()[-3000:]}"
    )


@contextmanager
def running_workers(env: Env, variants: list[str], log_dir: Path) -> Iterator[list[WorkerProcess]]:
    workers: list[WorkerProcess] = []
    try:
        for variant in variants:
            workers.append(start_worker(env, variant, log_dir))
        yield workers
    finally:
        for worker in workers:
            worker.terminate()


def wait_until_final(repo: Repository, job_ids: list[str], timeout: float) -> None:
    from jobs.contracts import FINAL_STATUSES, Status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [repo.get(j) for j in job_ids]
        if all(Status(j.status) in FINAL_STATUSES for j in jobs):
            return
        time.sleep(0.3)
    pending = {
        j.id: j.status
        for j in (repo.get(x) for x in job_ids)
        if j.status not in ("succeeded", "failed")
    }
    raise AssertionError(
        f"{len(pending)} jobs not final after {timeout}s: {list(pending.items())[:5]}"
    )
