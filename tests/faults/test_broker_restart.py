"""Redis restarted without persistence mid-run: every queued message is gone, no job is."""

from __future__ import annotations

from collections.abc import Callable

from jobs.broker import make_celery, queue_depths
from jobs.contracts import Status, queue_for
from store.models import Job
from tests.faults.conftest import Stack, Tally, sweeping, tally
from tests.faults.servers import RedisServer
from tests.support import eventually, wait_until_final

# Two B=4 workers hold 8 at once and the restart comes after 4 have finished: about 12 are
# still waiting in Redis when it loses them (counted there, just before the restart).
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
        queue = queue_for(stack.variant)
        waiting = queue_depths(make_celery(stack.settings, "restart-probe"), [queue])[queue]
        redis_server.restart()
        jobs = wait_until_final(stack.repo, ids, timeout=300)
    result = tally(stack.repo, ids, workers)
    resent = sum(len(r.resent) for r in reports)
    print(result.line("redis restart"), f"waiting_at_restart={waiting}", f"resent={resent}")
    assert result == Tally(sent=JOBS, finished=JOBS, succeeded=JOBS, lost=0, duplicated=0)
    # The restart really lost messages, and the sweep is what brought them back. Between the
    # count and the restart a worker that just finished its batch may take up to B more: those
    # were not lost and needed no resend.
    assert waiting > 0
    assert resent > 0 and resent >= waiting - stack.settings.worker_batch * len(workers)
    assert all(job.attempts == 1 for job in jobs.values())
    assert all(worker.proc.poll() is None for worker in workers)
