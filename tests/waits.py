"""The suite's waits: `eventually` for any state, `wait_until_final` for jobs to finish."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import OperationalError

from jobs.contracts import FINAL_STATUSES, Status
from store.models import Job
from store.repository import Repository

T = TypeVar("T")


def eventually(
    what: str,
    check: Callable[[], T | None],
    timeout: float,
    *,
    poll: float = 0.1,
    errors: tuple[type[BaseException], ...] = (),
    context: Callable[[], str] | None = None,
) -> T:
    """`check()`'s first truthy value, tried every `poll` s until `timeout` s have passed.

    Tried at least once, and a last time at the deadline. An exception in `errors` (a server
    still starting, a database a fault test has stopped) counts as "not yet"; any other, such
    as an assertion in `check` that a process is still alive, ends the wait at once. Failing,
    the AssertionError names `what`, the timeout, the last value or exception seen, and then
    `context()` (a log's tail, say).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except errors as error:
            last: object = error
        else:
            if value:
                return value
            last = value
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(poll, left))
    message = f"waited {timeout:g} s for {what}"
    if last is not None and not isinstance(last, bool):
        message += f"; last seen: {last!r:.500}"
    try:
        message += f":\n{context()}" if context is not None else ""
    except Exception as error:  # the failure stands, its context or not
        message += f" (its context failed: {error!r})"
    raise AssertionError(message)


def wait_until_final(repo: Repository, ids: list[str], timeout: float) -> dict[str, Job]:
    """Until every job is final (in `ids` order); a database outage meanwhile is waited out.

    `timeout` bounds a stall, not the whole wait: it restarts whenever a job moves (status,
    attempt or token progress), so a busy machine's slower generations do not fail a test
    while a stuck job still does (pytest's own per-test timeout bounds the whole).
    """
    deadline = time.monotonic() + timeout
    jobs: dict[str, Job] = {}
    seen: dict[str, tuple[object, ...]] = {}
    while time.monotonic() < deadline:
        try:
            found = {job.id: job for job in repo.find(Job.id.in_(ids))}
        except OperationalError:
            time.sleep(0.5)
            continue
        jobs = {i: found[i] for i in ids if i in found}
        if len(jobs) == len(ids) and all(Status(j.status) in FINAL_STATUSES for j in jobs.values()):
            return jobs
        now = {i: (j.status, j.attempts, j.progress) for i, j in jobs.items()}
        if now != seen:
            seen = now
            deadline = time.monotonic() + timeout
        time.sleep(0.3)
    pending = {i: jobs[i].status if i in jobs else "missing" for i in ids
               if i not in jobs or Status(jobs[i].status) not in FINAL_STATUSES}  # fmt: skip
    raise AssertionError(f"{len(pending)} of {len(ids)} jobs not final, none moving for "
                         f"{timeout}s: {list(pending.items())[:5]}")  # fmt: skip


def wait_generating(repo: Repository, ids: list[str], timeout: float, *, poll: float = 0.05) -> Job:
    """The first of `ids` seen running with output tokens recorded (mid-generation)."""

    def first() -> Job | None:
        running = repo.find(Job.id.in_(ids), Job.status == Status.RUNNING)
        return next((job for job in running if job.progress > 0), None)

    return eventually("a job to start generating", first, timeout, poll=poll)
