"""The only code that changes job state: each change is one guarded UPDATE."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from jobs.contracts import (
    FINAL_STATUSES,
    Assignment,
    DeliveryKind,
    DeliveryState,
    ErrorKind,
    ModelUsed,
    Status,
    model_used_for,
)
from jobs.errors import IdempotencyConflict, JobNotFound, QuotaExceeded
from jobs.models import ApiKey, Delivery, Job, StoredImage, WorkerHeartbeat
from photos.intake import STORED_PREFIX

_KEY_CHUNK = 500


def storable(text: str) -> str:
    """`text` as every database stores it: no NUL (PostgreSQL refuses it), valid UTF-8."""
    if "\x00" not in text and text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class NewDelivery:
    """A notice a submit asks for: a task (`target` = task name, with `queue`) or a webhook."""

    kind: DeliveryKind
    target: str
    queue: str | None = None

    def values(self, job_id: str, now: datetime) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "job_id": job_id,
            "kind": self.kind.value,
            "target": self.target,
            "queue": self.queue,
            "state": DeliveryState.PENDING.value,
            "attempts": 0,
            "created_at": now,
            "log": [],
        }


@dataclass(frozen=True)
class NewJob:
    """Everything a producer decides about a job before it is written."""

    advisor: str
    image_sha256: str
    image_ref: str
    subject: str
    variant: str
    assignment: Assignment
    weights_version: int
    base_model: str | None = None
    idempotency_key: str | None = None
    id: str = ""
    # The router's label (model_used_for with the split's weights); None: derived from
    # variant and assignment alone, a split counting as A/B traffic.
    model_used: ModelUsed | None = None
    photo: dict[str, Any] | None = None  # photos.intake.Photo.to_dict() of the submitted image
    # Outcome notices, written in the job's own transaction (the outbox).
    deliveries: tuple[NewDelivery, ...] = ()
    shadow_of: str | None = None  # a shadow job: the id of its primary
    submitted_by: str | None = None  # the gateway API key's name


class StartOutcome(enum.Enum):
    STARTED = "started"
    FINISHED = "finished"  # already succeeded or failed: a redelivery, do nothing
    BUSY = "busy"  # running under a live lease elsewhere
    POISON = "poison"  # killed its workers too often; now failed
    MISSING = "missing"
    REASSIGNED = "reassigned"  # the row now names another variant (drained): drop the message
    CANCELLED = "cancelled"  # a cancel was requested while it waited for a new attempt


class CancelOutcome(enum.Enum):
    CANCELLED = "cancelled"  # was queued: now cancelled, never to start
    REQUESTED = "requested"  # running: its worker stops it within about a second
    FINISHED = "finished"  # already succeeded, failed or cancelled: nothing to stop


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


class Repository:
    """Job, image and heartbeat persistence over one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- creating jobs -------------------------------------------------------------

    def create_jobs(
        self,
        jobs: Sequence[NewJob],
        images: dict[str, bytes] | None = None,
        *,
        max_in_flight: int | None = None,
    ) -> list[tuple[Job, bool]]:
        """Insert jobs (and inline images) in one transaction.

        Returns (job, created) per input; an existing idempotency key returns the stored job.
        Keys are claimed by the insert itself (ON CONFLICT DO NOTHING), so concurrent submits
        with one key all get the one job; a key that names a different request raises
        IdempotencyConflict and writes nothing. With `max_in_flight`, the submitter (every
        job's `submitted_by`) may then have at most that many jobs queued or running, else
        QuotaExceeded and nothing is written.
        """
        return self.create_with_shadows(jobs, images, max_in_flight=max_in_flight)[0]

    def create_with_shadows(
        self,
        jobs: Sequence[NewJob],
        images: dict[str, bytes] | None = None,
        shadows: Sequence[NewJob] = (),
        *,
        max_in_flight: int | None = None,
    ) -> tuple[list[tuple[Job, bool]], list[Job]]:
        """`create_jobs`, plus shadow jobs (`shadow_of` naming a job of `jobs` by its id) in the
        same transaction; a shadow whose primary was not created (a repeated key, or a key a
        concurrent submit claimed first) is dropped, and so are its deliveries. Shadows carry
        no submitter: they never count against a quota."""
        now = utcnow()
        owners = {new.submitted_by for new in jobs}
        with self.engine.begin() as conn:
            if max_in_flight is not None:
                if len(owners) != 1 or None in owners:
                    raise ValueError("a quota applies to the jobs of one submitter")
                # Per submitter, one quota check at a time: concurrent submits cannot both
                # see room for one more (SQLite's BEGIN IMMEDIATE serializes them anyway).
                conn.execute(
                    select(ApiKey.name).where(ApiKey.name.in_(owners)).with_for_update()
                ).all()
            if images:
                # One executemany each: a batch of n jobs costs a few statements, not n. A
                # conflict touches created_at: the prune then sees the image as new (and waits
                # for this transaction's row lock), so it never deletes an image a job needs.
                conn.execute(
                    self._upsert(StoredImage, "sha256", {"created_at": now}),
                    [
                        {"sha256": sha, "data": data, "size": len(data), "created_at": now}
                        for sha, data in images.items()
                    ],
                )
            firsts: dict[str, NewJob] = {}  # key -> the batch's first job with it
            row_of: list[dict[str, Any] | None] = []  # None: a key repeated within the batch
            for new in jobs:
                key = new.idempotency_key
                if key and key in firsts:
                    _check_same_request(key, firsts[key], new)
                    row_of.append(None)
                    continue
                if key:
                    firsts[key] = new
                row_of.append(_new_job_values(new, now))
            rows = [row for row in row_of if row is not None]
            inserted: set[str] = set()
            if rows:
                claim = self._insert_ignore(Job, "idempotency_key").returning(Job.id)
                inserted = set(conn.execute(claim, rows).scalars())
            made = {row["idempotency_key"]: Job(**row) for row in rows if row["idempotency_key"]}
            taken = [key for key, job in made.items() if job.id not in inserted]
            stored = self._jobs_by_key(conn, taken) if taken else {}
            for key, job in stored.items():
                _check_same_request(key, job, firsts[key])
            if max_in_flight is not None:
                _check_quota(conn, owners.pop() or "", max_in_flight)
            results: list[tuple[Job, bool]] = []
            for new, row in zip(jobs, row_of, strict=True):
                key = new.idempotency_key
                if key and key in stored:
                    results.append((stored[key], False))
                elif row is None:
                    results.append((made[key or ""], False))  # repeated within this batch
                else:
                    results.append((made[key] if key else Job(**row), True))
            # Only the jobs this insert created get their notices and shadows.
            notices = [
                d.values(row["id"], now)
                for new, row in zip(jobs, row_of, strict=True)
                if row is not None and row["id"] in inserted
                for d in new.deliveries
            ]
            paired = [_new_job_values(new, now) for new in shadows if new.shadow_of in inserted]
            if paired:
                conn.execute(insert(Job), paired)
            if notices:
                conn.execute(insert(Delivery), notices)
        return results, [Job(**values) for values in paired]

    @staticmethod
    def _jobs_by_key(conn: Connection, keys: Sequence[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        unique = list(dict.fromkeys(keys))
        # Chunked: SQLite caps bound parameters per statement.
        for start in range(0, len(unique), _KEY_CHUNK):
            chunk = unique[start : start + _KEY_CHUNK]
            for row in conn.execute(select(Job).where(Job.idempotency_key.in_(chunk))):
                job = _job_from_row(row)
                found[job.idempotency_key or ""] = job
        return found

    def _upsert(self, table: type[StoredImage], key: str, touch: dict[str, Any]) -> Any:
        builder = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        return builder(table).on_conflict_do_update(index_elements=[key], set_=touch)

    def _insert_ignore(self, table: type[Job] | type[StoredImage], key: str) -> Any:
        builder = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        return builder(table).on_conflict_do_nothing(index_elements=[key])

    def image_bytes(self, sha256: str) -> bytes | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(StoredImage.data).where(StoredImage.sha256 == sha256))

    # -- reading -------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        with self.engine.connect() as conn:
            row = conn.execute(select(Job).where(Job.id == job_id)).first()
        if row is None:
            raise JobNotFound(f"No job {job_id!r}")
        return _job_from_row(row)

    def find(self, *criteria: Any, limit: int | None = None) -> list[Job]:
        stmt = select(Job).where(*criteria).order_by(Job.queued_at)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [_job_from_row(r) for r in conn.execute(stmt)]

    # -- publishing ----------------------------------------------------------------

    def mark_published(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        if not ids:
            return
        now = utcnow()
        is_queued = Job.status == Status.QUEUED
        with self.engine.begin() as conn:
            # Whatever the status: a fast worker may have started (or finished) the job before
            # this runs, and the row must still say that its message went out.
            conn.execute(
                update(Job)
                .where(Job.id.in_(ids))
                .values(
                    published_at=case((is_queued, now), else_=func.coalesce(Job.published_at, now)),
                    publish_error=case((is_queued, None), else_=Job.publish_error),
                    publish_attempts=Job.publish_attempts + 1,
                )
            )

    def mark_publish_failed(self, job_ids: Iterable[str], error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(Job)
                .where(Job.id.in_(list(job_ids)), Job.status == Status.QUEUED)
                .values(
                    publish_error=storable(error[:2000]), publish_attempts=Job.publish_attempts + 1
                )
            )

    def unpublished(self, limit: int = 500) -> list[Job]:
        return self.find(Job.status == Status.QUEUED, Job.published_at.is_(None), limit=limit)

    def reassign_queued(
        self,
        job_ids: Sequence[str],
        variant: str,
        reason: str,
        *,
        weights: Mapping[str, float],
        base_model: str | None = None,
    ) -> list[str]:
        """Move not-yet-started jobs to `variant` (a drain); returns the ids actually moved.

        `weights` is the advisor's split they now fall under; `model_used` follows it as it
        would for a job routed now (see model_used_for).
        """
        moved: list[str] = []
        with self.engine.begin() as conn:
            for job_id in job_ids:
                row = conn.execute(
                    select(Job.variant, Job.assignment).where(Job.id == job_id)
                ).first()
                if row is None or row.variant == variant:
                    continue
                res = conn.execute(
                    update(Job)
                    .where(
                        Job.id == job_id, Job.status == Status.QUEUED, Job.variant == row.variant
                    )
                    .values(
                        variant=variant,
                        model_used=model_used_for(
                            variant, Assignment(row.assignment), weights
                        ).value,
                        reassigned_from=row.variant,
                        reassigned_reason=reason,
                        adapter_fingerprint=None,
                        base_model=base_model,
                        published_at=None,
                    )
                )
                if res.rowcount == 1:
                    moved.append(job_id)
        return moved

    # -- the worker's transitions --------------------------------------------------

    def start(
        self,
        job_id: str,
        worker: str,
        *,
        lease_seconds: float,
        max_attempts: int,
        variant: str | None = None,
        identity: VariantIdentity | None = None,
    ) -> StartOutcome:
        """queued -> running (attempts += 1), or take over a running job whose lease expired.

        With `variant` (the message's), a row that names another variant is left alone. The
        one UPDATE that starts the job also records what serves it (`identity`) and how long
        it waited in the queue.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(
                    Job.status, Job.attempts, Job.lease_until, Job.variant, Job.queued_at,
                    Job.cancel_requested_at,
                ).where(Job.id == job_id)
            ).first()  # fmt: skip
            if row is None:
                return StartOutcome.MISSING
            if Status(row.status) in FINAL_STATUSES:
                return StartOutcome.FINISHED
            if variant is not None and row.variant != variant:
                return StartOutcome.REASSIGNED
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
                    .values(**_cancelled(now, "Cancelled; its last attempt ended with its worker"))
                )
                return StartOutcome.CANCELLED if res.rowcount == 1 else StartOutcome.BUSY
            if row.attempts >= max_attempts:
                res = conn.execute(
                    update(Job)
                    .where(Job.id == job_id, startable)
                    .values(
                        status=Status.FAILED,
                        completed_at=now,
                        error_kind=ErrorKind.POISON,
                        error=(
                            f"Gave up after {row.attempts} attempts that never finished "
                            "(each killed or lost its worker); inspect the input and resubmit"
                        ),
                        lease_until=None,
                    )
                )
                return StartOutcome.POISON if res.rowcount == 1 else StartOutcome.BUSY
            res = conn.execute(
                update(Job)
                .where(Job.id == job_id, startable)
                .values(
                    status=Status.RUNNING,
                    attempts=Job.attempts + 1,
                    worker=worker,
                    started_at=now,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    progress=0,
                    **_start_details(now, as_utc(row.queued_at), identity),
                )
            )
            return StartOutcome.STARTED if res.rowcount == 1 else StartOutcome.BUSY

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
        with self.engine.begin() as conn:
            return conn.execute(update(Job).where(*guard).values(**values)).rowcount == 1

    def requeue(self, job_id: str, reason: str, *, worker: str | None = None) -> bool:
        """running -> queued: handed back by its worker, or recovered after its lease expired."""
        guard = [Job.id == job_id, Job.status == Status.RUNNING, Job.cancel_requested_at.is_(None)]
        guard.append(Job.worker == worker if worker is not None else Job.lease_until < utcnow())
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Job)
                .where(*guard)
                .values(
                    status=Status.QUEUED,
                    lease_until=None,
                    published_at=None,
                    publish_error=reason[:2000],
                )
            )
        return res.rowcount == 1

    def expired_running(self, limit: int = 500) -> list[Job]:
        return self.find(Job.status == Status.RUNNING, Job.lease_until < utcnow(), limit=limit)

    def give_up(self, job_id: str, max_attempts: int) -> bool:
        """running with an expired lease and no attempts left -> failed as poison."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.status == Status.RUNNING,
                    Job.lease_until < utcnow(),
                    Job.attempts >= max_attempts,
                )
                .values(
                    status=Status.FAILED,
                    completed_at=utcnow(),
                    error_kind=ErrorKind.POISON,
                    error=(
                        f"Gave up after {max_attempts} attempts that never finished "
                        "(each killed or lost its worker); inspect the input and resubmit"
                    ),
                    lease_until=None,
                )
            )
        return res.rowcount == 1

    # -- cancelling ----------------------------------------------------------------

    def cancel(self, job_id: str) -> tuple[CancelOutcome, Job]:
        """A queued job is cancelled at once; a running one gets a request its worker polls."""
        now = utcnow()
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == Status.QUEUED)
                .values(**_cancelled(now, "Cancelled before it started"))
            )
            outcome = CancelOutcome.CANCELLED
            if res.rowcount == 0:
                # Started meanwhile, or running already: ask its worker (a repeat keeps the first).
                res = conn.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == Status.RUNNING)
                    .values(cancel_requested_at=func.coalesce(Job.cancel_requested_at, now))
                )
                outcome = CancelOutcome.REQUESTED if res.rowcount == 1 else CancelOutcome.FINISHED
            row = conn.execute(select(Job).where(Job.id == job_id)).first()
        if row is None:
            raise JobNotFound(f"No job {job_id!r}")
        return outcome, _job_from_row(row)

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
        values = _cancelled(utcnow(), message)
        values.update(raw_output=raw_output, output_tokens=output_tokens,
                      inference_ms=inference_ms)  # fmt: skip
        return self._update_running(job_id, worker, **values)

    def cancel_abandoned(self, job_id: str) -> bool:
        """running, cancel requested and its lease expired (the worker died) -> cancelled."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.status == Status.RUNNING,
                    Job.cancel_requested_at.is_not(None),
                    Job.lease_until < utcnow(),
                )
                .values(**_cancelled(utcnow(), "Cancelled; its worker stopped before it could"))
            )
        return res.rowcount == 1

    def _update_running(self, job_id: str, worker: str, **values: Any) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == Status.RUNNING, Job.worker == worker)
                .values(**values)
            )
        return res.rowcount == 1

    # -- retention -----------------------------------------------------------------

    def prune_images(self, before: datetime) -> tuple[int, int]:
        """Delete stored images older than `before` that no queued or running job needs.

        Returns (images, bytes) deleted. A submit that reuses an image touches its
        created_at in its own transaction, so an image about to be needed is never taken.
        """
        needed = (
            select(Job.id)
            .where(
                Job.status.in_([Status.QUEUED, Status.RUNNING]),
                Job.image_ref == literal(STORED_PREFIX) + StoredImage.sha256,
            )
            .exists()
        )
        doomed = and_(StoredImage.created_at < before, ~needed)
        with self.engine.begin() as conn:
            size = conn.scalar(select(func.coalesce(func.sum(StoredImage.size), 0)).where(doomed))
            count = conn.execute(delete(StoredImage).where(doomed)).rowcount
        return count, int(size or 0) if count else 0

    def prune_jobs(self, before: datetime) -> int:
        """Delete succeeded and failed jobs completed before `before`; a count."""
        with self.engine.begin() as conn:
            return conn.execute(
                delete(Job).where(
                    Job.status.in_([Status.SUCCEEDED, Status.FAILED]), Job.completed_at < before
                )
            ).rowcount

    # -- heartbeats ----------------------------------------------------------------

    def beat(self, heartbeat: dict[str, Any]) -> None:
        """Upsert this worker's heartbeat row."""
        now = utcnow()
        values = {**heartbeat, "last_seen": now, "stopped_at": None}
        builder = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = builder(WorkerHeartbeat).values(started_at=now, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["worker"], set_=values)
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def mark_stopped(self, worker: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(WorkerHeartbeat)
                .where(WorkerHeartbeat.worker == worker)
                .values(stopped_at=utcnow(), current_job=None, slots_in_use=0)
            )

    def count_done(self, worker: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(WorkerHeartbeat)
                .where(WorkerHeartbeat.worker == worker)
                .values(jobs_done=WorkerHeartbeat.jobs_done + 1)
            )

    def live_workers(
        self, window_seconds: float, variant: str | None = None
    ) -> list[WorkerHeartbeat]:
        since = utcnow() - timedelta(seconds=window_seconds)
        stmt = select(WorkerHeartbeat).where(
            WorkerHeartbeat.last_seen >= since, WorkerHeartbeat.stopped_at.is_(None)
        )
        if variant is not None:
            stmt = stmt.where(WorkerHeartbeat.variant == variant)
        with self.engine.connect() as conn:
            return [WorkerHeartbeat(**r._mapping) for r in conn.execute(stmt)]

    def live_variants(self, window_seconds: float) -> set[str]:
        return {hb.variant for hb in self.live_workers(window_seconds)}


@dataclass(frozen=True)
class VariantIdentity:
    """What actually serves a job, written by the serving worker when it starts the job."""

    base_model: str
    adapter_fingerprint: str | None


def _cancelled(now: datetime, message: str) -> dict[str, Any]:
    # No error_kind: a cancel is the submitter's choice, never a failure of the service.
    return {
        "status": Status.CANCELLED,
        "completed_at": now,
        "error_kind": None,
        "error": message,
        "lease_until": None,
    }


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


def _requested_variant(job: Job | NewJob) -> str | None:
    """The variant a request forced (before any drain moved it), or None for a routed one."""
    if Assignment(job.assignment) is not Assignment.FORCED:
        return None
    return getattr(job, "reassigned_from", None) or job.variant


def _check_same_request(key: str, stored: Job | NewJob, new: NewJob) -> None:
    """A key reused for another image, advisor or forced variant is refused.

    The subject only steers routing; a retry that leaves it out still means the same job.
    """
    same = (
        stored.advisor == new.advisor
        and stored.image_sha256 == new.image_sha256
        and _requested_variant(stored) == _requested_variant(new)
        and stored.submitted_by == new.submitted_by
    )
    if not same:
        raise IdempotencyConflict(
            f"Idempotency key {key[:80]!r} already names a different request (another image, "
            "advisor or variant); use a new key for a new request",
            key=key,
        )


def _check_quota(conn: Connection, owner: str, limit: int) -> None:
    """After this transaction's inserts: `owner` may have at most `limit` jobs in flight."""
    in_flight = conn.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.submitted_by == owner, Job.status.in_([Status.QUEUED, Status.RUNNING]))
    )
    if (in_flight or 0) > limit:
        raise QuotaExceeded(
            f"Key {owner!r} may have {limit} jobs queued or running at once; wait for some to "
            "finish, then submit again",
            in_flight=(in_flight or 0),
            limit=limit,
        )


def _new_job_values(new: NewJob, now: datetime) -> dict[str, Any]:
    return {
        "id": new.id or str(uuid.uuid4()),
        "idempotency_key": new.idempotency_key,
        "advisor": new.advisor,
        "image_sha256": new.image_sha256,
        "image_ref": new.image_ref,
        "subject": new.subject,
        "variant": new.variant,
        "model_used": (new.model_used or model_used_for(new.variant, new.assignment)).value,
        "assignment": new.assignment.value,
        "weights_version": new.weights_version,
        "base_model": new.base_model,
        "photo": new.photo,
        "status": Status.QUEUED.value,
        "attempts": 0,
        "progress": 0,
        "publish_attempts": 0,
        "queued_at": now,
        "shadow_of": new.shadow_of,
        "submitted_by": new.submitted_by,
    }


def _job_from_row(row: Any) -> Job:
    values = {k: as_utc(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()}
    return Job(**values)
