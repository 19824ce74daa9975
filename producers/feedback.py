"""Feedback on critiques: one row per (job, source), a repeat replaces it and says so."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update

from jobs.clock import as_utc, utcnow
from jobs.contracts import Assignment, Status
from jobs.errors import FeedbackRefused, InvalidFeedback, JobNotFound
from store.dialect import insert_for
from store.models import Feedback, Job

MIN_RATING, MAX_RATING = 1, 5
MAX_COMMENT = 2000
MAX_SOURCE = 100
DEFAULT_SOURCE = "app"


@dataclass(frozen=True)
class FeedbackRecord:
    job_id: str
    source: str
    rating: int
    helpful: bool | None
    comment: str | None
    simulated: bool
    created_at: datetime
    updated_at: datetime
    replaced: bool  # an earlier rating from this source was replaced


def check_values(rating: object, comment: str | None, source: str) -> None:
    """Raise InvalidFeedback naming the bad value; bool is not a rating."""
    if isinstance(rating, bool) or not isinstance(rating, int):
        raise InvalidFeedback(f"rating must be a whole number 1-5, got {rating!r}")
    if not MIN_RATING <= rating <= MAX_RATING:
        raise InvalidFeedback(f"rating must be {MIN_RATING}-{MAX_RATING}, got {rating}")
    if comment is not None and len(comment) > MAX_COMMENT:
        raise InvalidFeedback(f"comment is {len(comment)} characters; the limit is {MAX_COMMENT}")
    if not source.strip() or len(source) > MAX_SOURCE:
        raise InvalidFeedback(f"source must be 1-{MAX_SOURCE} characters, got {source!r}")


class FeedbackStore:
    """Reads and writes the `feedback` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self,
        job_id: str,
        rating: int,
        *,
        helpful: bool | None = None,
        comment: str | None = None,
        source: str = DEFAULT_SOURCE,
        simulated: bool = False,
    ) -> FeedbackRecord:
        """Store a rating of a succeeded job's critique; a second one from `source` replaces it."""
        check_values(rating, comment, source)
        now = utcnow()
        values = {"rating": rating, "helpful": helpful, "comment": comment,
                  "simulated": simulated, "updated_at": now}  # fmt: skip
        with self.engine.begin() as conn:
            job = conn.execute(
                select(Job.status, Job.assignment, Job.error_kind).where(Job.id == job_id)
            ).first()
            if job is None:
                raise JobNotFound(f"No job {job_id!r}")
            _check_rateable(job_id, job.status, job.assignment, job.error_kind)
            # Claim, don't check-then-write: the insert loses to a concurrent one and updates.
            inserted = conn.execute(
                insert_for(self.engine, Feedback)
                .values(job_id=job_id, source=source, created_at=now, **values)
                .on_conflict_do_nothing(index_elements=["job_id", "source"])
                .returning(Feedback.id)
            ).first()
            if inserted is None:
                conn.execute(
                    update(Feedback)
                    .where(Feedback.job_id == job_id, Feedback.source == source)
                    .values(**values)
                )
            row = conn.execute(
                select(Feedback).where(Feedback.job_id == job_id, Feedback.source == source)
            ).one()
        return FeedbackRecord(
            row.job_id, row.source, row.rating, row.helpful, row.comment, row.simulated,
            as_utc(row.created_at) or now, as_utc(row.updated_at) or now, replaced=inserted is None,
        )  # fmt: skip

    def for_job(self, job_id: str) -> list[Feedback]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Feedback).where(Feedback.job_id == job_id).order_by(Feedback.source)
            ).all()
        return [Feedback(**r._mapping) for r in rows]


def _check_rateable(job_id: str, status: str, assignment: str, error_kind: str | None) -> None:
    if assignment == Assignment.SHADOW:
        raise FeedbackRefused(
            f"Job {job_id} is a shadow run no caller saw; rate the job that was returned"
        )
    if status == Status.FAILED:
        raise FeedbackRefused(f"Job {job_id} failed ({error_kind}): it has no critique to rate")
    if status != Status.SUCCEEDED:
        raise FeedbackRefused(f"Job {job_id} is {status}: rate its critique once it has succeeded")
