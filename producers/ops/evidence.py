"""What a candidate is judged on: the jobs finished since its exposure began, and their ratings.

The guard, a rollout plan's gate and the report's verdicts all read this one sequence, so
each question gets one answer wherever it is asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from jobs.clock import as_utc
from jobs.contracts import BASE_VARIANT, Status
from producers.ops.exposure import state_at, weight_changes
from producers.ops.report_rows import JobRow, job_rows, job_rows_query
from producers.ops.verdicts import Verdict, verdicts
from store.models import Feedback, Job


@dataclass(frozen=True)
class Known:
    """Rows a caller has read already: the jobs queued in [queued_since, now], their ratings."""

    queued_since: datetime
    rows: Sequence[JobRow]
    feedback: Sequence[Any]


def finished_since(
    engine: Engine,
    advisor: str,
    since: datetime,
    now: datetime,
    *,
    queued_before: datetime | None = None,
) -> tuple[list[JobRow], list[Any]]:
    """The advisor's jobs finished in [since, now] (shadows included) and their ratings;
    with `queued_before`, only those queued before it."""
    where = [
        Job.advisor == advisor,
        Job.status.in_([Status.SUCCEEDED, Status.FAILED]),
        Job.completed_at >= since,
        Job.completed_at <= now,
    ]
    if queued_before is not None:
        where.append(Job.queued_at < queued_before)
    rows = job_rows(engine, job_rows_query(engine.dialect.name, *where))
    rated = (
        select(Feedback.job_id, Feedback.rating, Feedback.helpful, Feedback.simulated,
               Feedback.created_at)
        .join(Job, Job.id == Feedback.job_id)
        .where(*where)
        .order_by(Feedback.created_at)
    )  # fmt: skip
    with engine.connect() as conn:
        feedback = conn.execute(rated).all()
    return rows, list(feedback)


def _finished_with(
    engine: Engine, advisor: str, since: datetime, now: datetime, known: Known
) -> tuple[list[JobRow], list[Any]]:
    """finished_since() read from `known` rows plus those queued before them: one short query
    instead of reading the exposure's jobs a second time."""
    final = (Status.SUCCEEDED, Status.FAILED)
    mine = []
    for r in known.rows:
        done = as_utc(r.completed_at)
        if r.advisor == advisor and r.status in final and done is not None and since <= done <= now:
            mine.append(r)
    older, rated = finished_since(engine, advisor, since, now, queued_before=known.queued_since)
    return [*mine, *older], [*known.feedback, *rated]


def exposure_verdicts(
    engine: Engine, advisor: str, now: datetime, known: Known | None = None
) -> dict[str, Verdict]:
    """Each exposed candidate's verdict over its exposure, as the guard and plans judge it;
    `known` (the jobs a report has read) saves reading them again."""
    starts = {
        v: at for v, at in state_at(weight_changes(engine, advisor), now).starts.items()
        if v != BASE_VARIANT
    }  # fmt: skip
    if not starts:
        return {}
    start = min(starts.values())
    if known is None:
        rows, feedback = finished_since(engine, advisor, start, now)
    else:
        rows, feedback = _finished_with(engine, advisor, start, now, known)
    out = {}
    for variant, start in starts.items():
        mine = [r for r in rows if (as_utc(r.completed_at) or start) >= start]
        found = next((v for v in verdicts(mine, feedback) if v.variant == variant), None)
        if found is not None:
            why = f"{found.why}; over its exposure since {start:%Y-%m-%d %H:%M} UTC"
            out[variant] = replace(found, why=why)
    return out
