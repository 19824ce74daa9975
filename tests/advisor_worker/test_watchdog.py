"""The hard-limit watchdog ends a process whose task overruns, and only then."""

from __future__ import annotations

import subprocess
import sys
import time

from advisor_worker.watchdog import EXIT_HARD_LIMIT

SCRIPT = """
import logging, sys, time
logging.basicConfig(level=logging.INFO)
from advisor_worker.watchdog import Watchdog
watchdog = Watchdog(0.5, poll_seconds=0.05)
watchdog.start()
with watchdog.armed("job-1"):
    time.sleep(float(sys.argv[1]))
time.sleep(1.0)
print("still alive", flush=True)
"""


def run(task_seconds: float) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(task_seconds)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    return out, time.monotonic() - started


def test_a_task_past_the_hard_limit_ends_its_process_at_once_saying_why() -> None:
    out, elapsed = run(30)
    assert out.returncode == EXIT_HARD_LIMIT, out.stderr
    assert "Task job-1 ran past the hard time limit of 0.5s" in out.stderr
    assert "still alive" not in out.stdout
    assert elapsed < 20


def test_a_task_that_ends_in_time_disarms_the_watchdog() -> None:
    out, _elapsed = run(0.1)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "still alive"
    assert "hard time limit" not in out.stderr
