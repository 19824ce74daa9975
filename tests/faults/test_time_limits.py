"""Time limits: the soft one ends generation as a timeout; the hard one ends a stuck worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from advisor_worker.watchdog import EXIT_HARD_LIMIT
from jobs.contracts import ErrorKind, Status
from store.models import Job
from tests.faults.conftest import Stack, Tally, sweeping, tally
from tests.support import eventually, wait_until_final


def test_a_generation_past_the_soft_limit_fails_as_timeout_and_keeps_its_partial_output(
    make_stack: Callable[..., Stack], sqlite_url: str, tmp_path: Path
) -> None:
    # Soft limit 4 s (hard 6 s); outputs this long take far more than 4 s to generate.
    stack = make_stack(
        sqlite_url,
        f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        task_time_limit="6",
        text_limit="4000",
        max_output_tokens="16000",
    )
    assert stack.settings.soft_time_limit == 4
    [worker] = stack.start_workers(1)
    ids = stack.submit(1)
    job = wait_until_final(stack.repo, ids, timeout=60)[ids[0]]
    print(tally(stack.repo, ids, [worker]).line("soft time limit"), f"tokens={job.output_tokens}")
    assert (job.status, job.error_kind) == (Status.FAILED, ErrorKind.TIMEOUT), job.error
    assert job.error is not None and "Soft time limit of 4s" in job.error
    assert job.output_tokens and job.output_tokens > 10
    assert job.raw_output and job.raw_output.startswith("{")
    assert job.llm_outputs is None
    assert worker.proc.poll() is None


@contextmanager
def row_locked(database_url: str, job_id: str) -> Iterator[None]:
    """Hold the job row's lock, as a stuck transaction elsewhere would: its writers hang."""
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        conn.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
        yield
        conn.rollback()


def wait_attempt(stack: Stack, job_id: str, attempt: int, timeout: float = 60) -> Job:
    """The job once `attempt` has started: from then on each of its writes hangs on a held lock.

    Waiting for its first tokens instead left a window of a generation's length, which a
    short critique on a quick worker closed before the test could take the lock.
    """

    def started() -> Job | None:
        job = stack.repo.get(job_id)
        if job.status == Status.RUNNING and job.attempts == attempt:
            return job
        assert job.status == Status.QUEUED or job.status == Status.RUNNING, job.error
        return None

    return eventually(f"attempt {attempt} of {job_id} started", started, timeout, poll=0.02)


def test_a_job_that_hangs_its_worker_every_time_is_ended_by_the_watchdog_then_given_up_as_poison(
    make_stack: Callable[..., Stack], postgres_url: str, tmp_path: Path
) -> None:
    # The embedded broker never redelivers a dead worker's message: the sweep recovers it.
    stack = make_stack(postgres_url, f"sqla+sqlite:///{tmp_path / 'broker.db'}",
                       task_time_limit="6", max_attempts="2", worker_live_window="4",
                       text_limit="160", max_output_tokens="1800")  # fmt: skip
    workers = stack.start_workers(2)
    by_pid = {w.proc.pid: w for w in workers}
    with sweeping(stack.settings) as reports:
        [job_id] = stack.submit(1)
        for attempt in (1, 2):
            job = wait_attempt(stack, job_id, attempt)
            holder = by_pid[int((job.worker or "").rsplit("-", 1)[1].split("@")[0])]
            started = time.monotonic()
            with row_locked(postgres_url, job_id):
                code = holder.proc.wait(timeout=60)
            elapsed = time.monotonic() - started
            print(f"attempt {attempt}: worker exited {code} {elapsed:.1f}s after the lock")
            assert code == EXIT_HARD_LIMIT
            assert "ran past the hard time limit of 6s" in holder.output()
        job = wait_until_final(stack.repo, [job_id], timeout=60)[job_id]
    result = tally(stack.repo, [job_id], workers)
    print(result.line("poison"), f"attempts={job.attempts}")
    assert result == Tally(sent=1, finished=1, succeeded=0, lost=0, duplicated=0)
    assert (job.status, job.error_kind, job.attempts) == (Status.FAILED, ErrorKind.POISON, 2)
    assert job.error is not None and "Gave up after 2 attempts" in job.error
    assert [job_id] in [r.poisoned for r in reports]
