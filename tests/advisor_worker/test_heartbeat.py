"""The heartbeat thread passes a cancel request on to the job it holds, within a tick or two."""

from __future__ import annotations

import threading
import time

from advisor_worker.heartbeat import Heartbeat
from jobs.contracts import Assignment
from store.db import engine_for
from store.repository import Repository
from store.submissions import NewJob


def test_a_cancel_request_reaches_only_the_cancelled_job_within_half_a_second(
    migrated_url: str,
) -> None:
    repo = Repository(engine_for(migrated_url))
    jobs = [NewJob("ansel", "a" * 64, "sha256:" + "a" * 64, f"u{i}", "base", Assignment.FORCED, 1)
            for i in range(2)]  # fmt: skip
    ids = [job.id for job, _ in repo.create_jobs(jobs)]
    identity = {"worker": "w1", "variant": "base", "queue": "advisor.base", "host": "h",
                "pid": 1, "base_model": "m"}  # fmt: skip
    heartbeat = Heartbeat(repo, identity, interval=5, lease_seconds=30, slots=2)
    flags = {job_id: threading.Event() for job_id in ids}
    for job_id in ids:
        repo.start(job_id, "w1", lease_seconds=30, max_attempts=3)
        heartbeat.track(job_id, lambda: 0, on_cancel=flags[job_id].set)
    heartbeat.start()
    try:
        started = time.monotonic()
        repo.cancel(ids[0])
        assert flags[ids[0]].wait(timeout=2)
        seen = time.monotonic() - started
    finally:
        heartbeat.stop()
    assert seen < 0.5, seen
    assert not flags[ids[1]].is_set()
