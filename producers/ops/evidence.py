"""What a candidate is judged on: the jobs finished since its exposure began, and their ratings.

The guard, a rollout plan's gate and the report's verdicts all read this one sequence, so
each question gets one answer wherever it is asked.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from jobs.clock import as_utc
from jobs.contracts import BASE_VARIANT, Status
from producers.ops.exposure import state_at, weight_changes
from producers.ops.report_rows import JobRow, job_rows, job_rows_query
from producers.ops.verdicts import Verdict, verdicts
from store.models import Feedback, Job


def finished_since(
    engine: Engine, advisor: str, since: datetime, now: datetime
) -> tuple[list[JobRow], list[Any]]:
    """The advisor's jobs finished in [since, now] (shadows included) and their ratings."""
    where = (
        Job.advisor == advisor,
        Job.status.in_([Status.SUCCEEDED, Status.FAILED]),
        Job.completed_at >= since,
        Job.completed_at <= now,
    )
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


def exposure_verdicts(engine: Engine, advisor: str, now: datetime) -> dict[str, Verdict]:
    """Each exposed candidate's verdict over its exposure, as the guard and plans judge it."""
    starts = {
        v: at for v, at in state_at(weight_changes(engine, advisor), now).starts.items()
        if v != BASE_VARIANT
    }  # fmt: skip
    if not starts:
        return {}
    rows, feedback = finished_since(engine, advisor, min(starts.values()), now)
    out = {}
    for variant, start in starts.items():
        mine = [r for r in rows if (as_utc(r.completed_at) or start) >= start]
        found = next((v for v in verdicts(mine, feedback) if v.variant == variant), None)
        if found is not None:
            why = f"{found.why}; over its exposure since {start:%Y-%m-%d %H:%M} UTC"
            out[variant] = replace(found, why=why)
    return out
