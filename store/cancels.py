"""Cancelling a job: at once while queued, by a request its worker polls while running."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update

from jobs.clock import as_utc, utcnow
from jobs.contracts import Status
from jobs.errors import JobNotFound
from store.models import Job
from store.reading import Reader, job_from_row


class CancelOutcome(enum.Enum):
    CANCELLED = "cancelled"  # was queued: now cancelled, never to start
    REQUESTED = "requested"  # running: its worker stops it within about a second
    FINISHED = "finished"  # already succeeded, failed or cancelled: nothing to stop


def cancelled(now: datetime, message: str) -> dict[str, Any]:
    """The values of a cancelled row."""
    # No error_kind: a cancel is the submitter's choice, never a failure of the service.
    return {
        "status": Status.CANCELLED,
        "completed_at": now,
        "error_kind": None,
        "error": message,
        "lease_until": None,
    }


class Cancels(Reader):
    """The cancel transitions, and the guarded UPDATE every transition goes through."""

    def cancel(self, job_id: str) -> tuple[CancelOutcome, Job]:
        """A queued job is cancelled at once; a running one gets a request its worker polls.

        One UPDATE ... RETURNING does either; only a finished (or missing) job is read again.
        """
        now = utcnow()
        is_queued = Job.status == Status.QUEUED
        values = {
            column: case((is_queued, value), else_=getattr(Job, column))
            for column, value in cancelled(now, "Cancelled before it started").items()
        }
        # Running: ask its worker (a repeat keeps the first request's time).
        values["cancel_requested_at"] = case(
            (is_queued, Job.cancel_requested_at),
            else_=func.coalesce(Job.cancel_requested_at, now),
        )
        with self.engine.begin() as conn:
            row = conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.in_([Status.QUEUED, Status.RUNNING]))
                .values(**values)
                .returning(*Job.__table__.columns)
            ).first()
            if row is not None:
                job = job_from_row(row)
                is_cancelled = job.status == Status.CANCELLED
                return (CancelOutcome.CANCELLED if is_cancelled else CancelOutcome.REQUESTED), job
            row = conn.execute(select(Job).where(Job.id == job_id)).first()
        if row is None:
            raise JobNotFound(f"No job {job_id!r}")
        return CancelOutcome.FINISHED, job_from_row(row)

    def cancel_requests(self, job_ids: Sequence[str]) -> dict[str, datetime]:
        """Which of these running jobs have a cancel request, and since when."""
        if not job_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Job.id, Job.cancel_requested_at).where(
                    Job.id.in_(list(job_ids)), Job.cancel_requested_at.is_not(None)
                )
            ).all()
        return {row.id: as_utc(row.cancel_requested_at) or utcnow() for row in rows}

    def record_cancelled(
        self,
        job_id: str,
        worker: str,
        message: str,
        *,
        raw_output: str | None = None,
        output_tokens: int | None = None,
        inference_ms: int | None = None,
    ) -> bool:
        """running -> cancelled by the worker holding it; the partial text is kept."""
        values = cancelled(utcnow(), message)
        values.update(raw_output=raw_output, output_tokens=output_tokens,
                      inference_ms=inference_ms)  # fmt: skip
        return self._update_running(job_id, worker, **values)

    def cancel_abandoned(self, job_id: str) -> bool:
        """running, cancel requested and its lease expired (the worker died) -> cancelled."""
        return self._update_where(
            Job.id == job_id, Job.status == Status.RUNNING, Job.cancel_requested_at.is_not(None),
            Job.lease_until < utcnow(),
            **cancelled(utcnow(), "Cancelled; its worker stopped before it could"),
        )  # fmt: skip

    def _update_running(self, job_id: str, worker: str, **values: Any) -> bool:
        return self._update_where(
            Job.id == job_id, Job.status == Status.RUNNING, Job.worker == worker, **values
        )

    def _update_where(self, *guard: Any, **values: Any) -> bool:
        """One guarded UPDATE; True if it changed the one row it names."""
        with self.engine.begin() as conn:
            return conn.execute(update(Job).where(*guard).values(**values)).rowcount == 1
