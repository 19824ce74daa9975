"""The worker's transitions: start, progress, succeed, fail, requeue and give up."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Required, TypedDict, Unpack

from sqlalchemy import (
    and_,
    or_,
    select,
    update,
)

from jobs.clock import as_utc, utcnow
from jobs.contracts import (
    FINAL_STATUSES,
    ErrorKind,
    Status,
)
from store.cancels import CancelOutcome, Cancels, cancelled
from store.dialect import storable
from store.models import Job
from store.reading import job_from_row
from store.scores import stored_scores

__all__ = ["CancelOutcome", "Lifecycle", "Outcome", "StartOutcome", "Started", "StartTerms"]


class StartOutcome(enum.Enum):
    STARTED = "started"
    FINISHED = "finished"  # already succeeded or failed: a redelivery, do nothing
    BUSY = "busy"  # running under a live lease elsewhere
    POISON = "poison"  # killed its workers too often; now failed
    MISSING = "missing"
    REASSIGNED = "reassigned"  # the row now names another variant (drained): drop the message
    CANCELLED = "cancelled"  # a cancel was requested while it waited for a new attempt


@dataclass(frozen=True)
class Started:
    """What a start attempt did, and the row as it started (None unless STARTED)."""

    outcome: StartOutcome
    job: Job | None = None


@dataclass(frozen=True)
class Outcome:
    """A finished analysis, as the worker records it."""

    llm_outputs: dict[str, Any]
    raw_output: str
    prompt_tokens: int
    output_tokens: int
    inference_ms: int
    schema_version: str


@dataclass(frozen=True)
class ModelInput:
    """What the model was given for a job, as the worker records it before generating."""

    photo: dict[str, Any]
    prompt_version: str
    width: int
    height: int
    image_tokens: int


@dataclass(frozen=True)
class VariantIdentity:
    """What actually serves a job, written by the serving worker when it starts the job."""

    base_model: str
    adapter_fingerprint: str | None


def poison_error(attempts: int) -> str:
    """Why a job that kept killing or losing its worker was failed."""
    return (
        f"Gave up after {attempts} attempts that never finished "
        "(each killed or lost its worker); inspect the input and resubmit"
    )


def _poisoned(attempts: int) -> dict[str, Any]:
    return {
        "status": Status.FAILED, "completed_at": utcnow(), "error_kind": ErrorKind.POISON,
        "error": poison_error(attempts), "lease_until": None,
    }  # fmt: skip


class StartTerms(TypedDict, total=False):
    """How a worker starts a job: its lease, the attempts allowed, and (optionally) the
    message's variant (a row naming another is left alone) and what serves it."""

    lease_seconds: Required[float]
    max_attempts: Required[int]
    variant: str | None
    identity: VariantIdentity | None


class Lifecycle(Cancels):
    """Each change of a job's state is one guarded UPDATE."""

    def start(self, job_id: str, worker: str, **terms: Unpack[StartTerms]) -> StartOutcome:
        """queued -> running (attempts += 1), or take over a running job whose lease expired."""
        return self.claim(job_id, worker, **terms).outcome

    def claim(self, job_id: str, worker: str, **terms: Unpack[StartTerms]) -> Started:
        """`start`, returning the started row from the starting UPDATE itself (RETURNING).

        With `variant` (the message's), a row that names another variant is left alone. The
        one UPDATE that starts the job also records what serves it (`identity`) and how long
        it waited in the queue.
        """
        now = utcnow()
        variant, identity = terms.get("variant"), terms.get("identity")
        with self.engine.begin() as conn:
            row = conn.execute(
                select(
                    Job.status, Job.attempts, Job.lease_until, Job.variant, Job.queued_at,
                    Job.cancel_requested_at,
                ).where(Job.id == job_id)
            ).first()  # fmt: skip
            if row is None:
                return Started(StartOutcome.MISSING)
            if Status(row.status) in FINAL_STATUSES:
                return Started(StartOutcome.FINISHED)
            if variant is not None and row.variant != variant:
                return Started(StartOutcome.REASSIGNED)
            startable = or_(
                Job.status == Status.QUEUED,
                and_(Job.status == Status.RUNNING, Job.lease_until < now),
            )
            if variant is not None:
                # In the same UPDATE, so a drain between the read and here cannot be missed.
                startable = and_(startable, Job.variant == variant)
            if row.cancel_requested_at is not None:
                # Cancelled while running, then its worker died: it is not started again.
                res = conn.execute(
                    update(Job)
                    .where(Job.id == job_id, startable)
                    .values(**cancelled(now, "Cancelled; its last attempt ended with its worker"))
                )
                return Started(StartOutcome.CANCELLED if res.rowcount == 1 else StartOutcome.BUSY)
            if row.attempts >= terms["max_attempts"]:
                res = conn.execute(
                    update(Job).where(Job.id == job_id, startable).values(**_poisoned(row.attempts))
                )
                return Started(StartOutcome.POISON if res.rowcount == 1 else StartOutcome.BUSY)
            # RETURNING (PostgreSQL; SQLite since 3.35): the worker needs no second read.
            started = conn.execute(
                update(Job)
                .where(Job.id == job_id, startable)
                .values(
                    status=Status.RUNNING,
                    attempts=Job.attempts + 1,
                    worker=worker,
                    started_at=now,
                    lease_until=now + timedelta(seconds=terms["lease_seconds"]),
                    progress=0,
                    **_start_details(now, as_utc(row.queued_at), identity),
                )
                .returning(*Job.__table__.columns)
            ).first()
            if started is None:
                return Started(StartOutcome.BUSY)
            return Started(StartOutcome.STARTED, job_from_row(started))

    def record_progress(
        self, job_id: str, worker: str, output_tokens: int, *, lease_seconds: float
    ) -> bool:
        """Token progress; also renews the lease. False if the job is no longer ours."""
        return self._update_running(
            job_id,
            worker,
            progress=output_tokens,
            lease_until=utcnow() + timedelta(seconds=lease_seconds),
        )

    def attach_model_input(self, job_id: str, worker: str, model_input: ModelInput) -> bool:
        """The photo as the serving worker read it, the prompt version and the model's image."""
        return self._update_running(
            job_id,
            worker,
            photo=model_input.photo,
            prompt_version=model_input.prompt_version,
            model_image_width=model_input.width,
            model_image_height=model_input.height,
            image_tokens=model_input.image_tokens,
        )

    def succeed(self, job_id: str, worker: str, outcome: Outcome) -> bool:
        """running -> succeeded, only by the worker holding the job."""
        now = utcnow()
        return self._update_running(
            job_id,
            worker,
            status=Status.SUCCEEDED,
            completed_at=now,
            llm_outputs=outcome.llm_outputs,
            **stored_scores(outcome.llm_outputs),
            raw_output=storable(outcome.raw_output),
            prompt_tokens=outcome.prompt_tokens,
            output_tokens=outcome.output_tokens,
            progress=outcome.output_tokens,
            inference_ms=outcome.inference_ms,
            schema_version=outcome.schema_version,
            lease_until=None,
            error_kind=None,
            error=None,
        )

    def fail(
        self,
        job_id: str,
        kind: ErrorKind,
        error: str,
        *,
        worker: str | None = None,
        raw_output: str | None = None,
        output_tokens: int | None = None,
        inference_ms: int | None = None,
    ) -> bool:
        """queued|running -> failed. A worker may only fail a job it holds."""
        values: dict[str, Any] = {
            "status": Status.FAILED,
            "completed_at": utcnow(),
            "error_kind": kind,
            "error": storable(error[:4000]),
            "lease_until": None,
        }
        if raw_output is not None:
            values["raw_output"] = storable(raw_output)
        if output_tokens is not None:
            values["output_tokens"] = output_tokens
        if inference_ms is not None:
            values["inference_ms"] = inference_ms
        guard = [Job.id == job_id]
        if worker is None:
            guard.append(Job.status.in_([Status.QUEUED, Status.RUNNING]))
        else:
            guard.append(
                or_(
                    Job.status == Status.QUEUED,
                    and_(Job.status == Status.RUNNING, Job.worker == worker),
                )
            )
        return self._update_where(*guard, **values)

    def requeue(self, job_id: str, reason: str, *, worker: str | None = None) -> bool:
        """running -> queued: handed back by its worker, or recovered after its lease expired."""
        guard = [Job.id == job_id, Job.status == Status.RUNNING, Job.cancel_requested_at.is_(None)]
        guard.append(Job.worker == worker if worker is not None else Job.lease_until < utcnow())
        return self._update_where(
            *guard, status=Status.QUEUED, lease_until=None, published_at=None,
            publish_error=reason[:2000],
        )  # fmt: skip

    def expired_running(self, limit: int = 500) -> list[Job]:
        return self.find(Job.status == Status.RUNNING, Job.lease_until < utcnow(), limit=limit)

    def give_up(self, job_id: str, max_attempts: int) -> bool:
        """running with an expired lease and no attempts left -> failed as poison."""
        return self._update_where(
            Job.id == job_id, Job.status == Status.RUNNING, Job.lease_until < utcnow(),
            Job.attempts >= max_attempts, **_poisoned(max_attempts),
        )  # fmt: skip


def _start_details(
    now: datetime, queued_at: datetime | None, identity: VariantIdentity | None
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if queued_at is not None:
        values["queue_wait_ms"] = max(0, int((now - queued_at).total_seconds() * 1000))
    if identity is not None:
        values["base_model"] = identity.base_model
        values["adapter_fingerprint"] = identity.adapter_fingerprint
    return values
