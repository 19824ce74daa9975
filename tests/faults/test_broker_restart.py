"""Redis restarted without persistence mid-run: every queued message is gone, no job is."""

from __future__ import annotations

from collections.abc import Callable

from jobs.contracts import Status
from store.models import Job
from tests.faults.conftest import Stack, Tally, sweeping, tally
from tests.faults.servers import RedisServer
from tests.support import eventually, wait_until_final

# Two B=4 workers hold 8 at once and the restart comes after 4 have finished: about 12 are
# still queued in Redis when it loses them.
JOBS = 24


def test_two_dozen_jobs_succeed_once_each_across_a_redis_restart_that_loses_every_message(
    make_stack: Callable[..., Stack], redis_server: RedisServer, sqlite_url: str
) -> None:
    stack = make_stack(sqlite_url, redis_server.url)
    workers = stack.start_workers(2)
    with sweeping(stack.settings) as reports:
        ids = stack.submit(JOBS)
        succeeded = (Job.id.in_(ids), Job.status == Status.SUCCEEDED)
        eventually("four jobs to succeed before the restart",
                   lambda: len(stack.repo.find(*succeeded)) >= 4, 120, poll=0.2)  # fmt: skip
        redis_server.restart()
        queued_at_restart = len(stack.repo.find(Job.id.in_(ids), Job.status == Status.QUEUED))
        jobs = wait_until_final(stack.repo, ids, timeout=300)
    result = tally(stack.repo, ids, workers)
    print(result.line("redis restart"), f"queued_at_restart={queued_at_restart}",
          f"resent={sum(len(r.resent) for r in reports)}")  # fmt: skip
    assert result == Tally(sent=JOBS, finished=JOBS, succeeded=JOBS, lost=0, duplicated=0)
    # The restart really lost messages, and the sweep is what brought them back. Each worker
    # may hold one message it received before the restart and had not yet started (prefetch
    # 1): that job was still queued when counted, and needed no resend.
    assert queued_at_restart > 0
    assert sum(len(r.resent) for r in reports) >= queued_at_restart - len(workers)
    assert all(job.attempts == 1 for job in jobs.values())
    assert all(worker.proc.poll() is None for worker in workers)
