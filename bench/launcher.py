"""Worker subprocesses for benchmarks: start, wait until serving, read peak memory, stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from store.repository import Repository

WORKER = [sys.executable, "-m", "advisor_worker.cli", "run", "--variant"]


class WorkerFailed(RuntimeError):
    """A benchmark worker exited or never became ready."""


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def peak_rss_mib(self) -> float:
        """VmHWM: the most resident memory the process has held since it started."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise WorkerFailed(f"no VmHWM for pid {self.proc.pid}")

    def stop(self, timeout: float = 120) -> None:
        """Warm shutdown (SIGTERM), killed if it does not end in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start(env: dict[str, str], log_dir: Path, variant: str = "base") -> Worker:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"worker-{variant}-{time.monotonic_ns()}.log"
    with log.open("wb") as handle:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*WORKER, variant], env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    return Worker(proc, log)


def wait_ready(workers: list[Worker], repo: Repository, timeout: float = 300) -> float:
    """Until each has a heartbeat and Celery logged `ready`; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        for worker in workers:
            if worker.proc.poll() is not None:
                raise WorkerFailed(
                    f"worker exited {worker.proc.returncode}: {worker.output()[-2000:]}"
                )
        live = {hb.pid for hb in repo.live_workers(60)}
        if all(w.proc.pid in live and "ready" in w.output() for w in workers):
            return time.monotonic() - started
        time.sleep(0.2)
    for worker in workers:
        worker.stop(timeout=10)
    raise WorkerFailed(f"workers not ready in {timeout:.0f}s")
