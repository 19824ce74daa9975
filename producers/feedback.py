"""Feedback on critiques: one row per (job, source), a repeat replaces it and says so."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, Unpack

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Engine, select, update

from jobs.clock import as_utc, utcnow
from jobs.contracts import PRINTABLE, PROSE, Assignment, Status
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


class FeedbackValues(BaseModel):
    """A rating as the app's user gave it: the one check of its values, for the client
    library, the command line and the gateway's body alike."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rating: int = Field(ge=MIN_RATING, le=MAX_RATING, strict=True, examples=[4])
    helpful: bool | None = Field(default=None, strict=True)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT, pattern=PROSE)
    source: str = Field(
        default=DEFAULT_SOURCE, min_length=1, max_length=MAX_SOURCE, pattern=PRINTABLE,
        description="who rates; one rating per job and source",
    )  # fmt: skip

    @field_validator("source")
    @classmethod
    def _not_blank(cls, source: str) -> str:
        if not source.strip():
            raise ValueError("source must not be blank")
        return source


class FeedbackFields(TypedDict, total=False):
    rating: int  # required: its absence is refused by the check
    helpful: bool | None
    comment: str | None
    source: str


def feedback_values(**fields: Unpack[FeedbackFields]) -> FeedbackValues:
    """FeedbackValues from keyword arguments; InvalidFeedback names each bad value."""
    try:
        return FeedbackValues.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise InvalidFeedback(
            f"Invalid feedback: {problems} (rating {MIN_RATING}-{MAX_RATING}; comment at most "
            f"{MAX_COMMENT} characters; source 1-{MAX_SOURCE} characters; no control characters)"
        ) from exc


def _problem(err: Any) -> str:
    where = ".".join(str(part) for part in err.get("loc", ())) or "value"
    if err.get("type") == "string_too_long":
        return f"{where} is {len(err.get('input', ''))} characters"
    return f"{where}: {err.get('msg', 'invalid')} (got {err.get('input')!r:.40})"


class FeedbackStore:
    """Reads and writes the `feedback` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self, job_id: str, feedback: FeedbackValues, *, simulated: bool = False
    ) -> FeedbackRecord:
        """Store a rating of a succeeded job's critique; a second one from its source replaces
        the first."""
        now = utcnow()
        source = feedback.source
        values = {
            "rating": feedback.rating, "helpful": feedback.helpful, "comment": feedback.comment,
            "simulated": simulated, "updated_at": now,
        }  # fmt: skip
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
