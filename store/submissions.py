"""Creating jobs: idempotency keys claimed by the insert, the quota, shadows and the outbox."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    func,
    insert,
    select,
)

from jobs.clock import utcnow
from jobs.contracts import (
    Assignment,
    DeliveryKind,
    DeliveryState,
    ModelUsed,
    Status,
    model_used_for,
)
from jobs.errors import IdempotencyConflict, QuotaExceeded
from store.dialect import insert_for, insert_new, insert_or_touch
from store.models import ApiKey, Delivery, Job, StoredImage, detached
from store.reading import Reader, job_from_row

_KEY_CHUNK = 500


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


class Submissions(Reader):
    """Writes new jobs, their inline images, shadows and notices, each submit one transaction."""

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
                # A batch of n jobs costs a few statements, not n. A conflict touches
                # created_at: the prune then sees the image as new (and waits for this
                # transaction's row lock), so it never deletes an image a job needs.
                uploads = [
                    {"sha256": sha, "data": data, "size": len(data), "created_at": now}
                    for sha, data in images.items()
                ]
                insert_or_touch(conn, StoredImage.__table__, uploads, "sha256", ["created_at"])
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
            inserted = self._insert_jobs(conn, rows)
            made = {
                row["idempotency_key"]: detached(Job, row) for row in rows if row["idempotency_key"]
            }
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
                    results.append((made[key] if key else detached(Job, row), True))
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
        return results, [detached(Job, values) for values in paired]

    def _insert_jobs(self, conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
        """The ids of `rows` this insert created: a keyed row whose key exists is skipped."""
        keyed = [row for row in rows if row["idempotency_key"]]
        plain = [row for row in rows if not row["idempotency_key"]]
        inserted: set[str] = set()
        if keyed:
            claim = (
                insert_for(self.engine, Job)
                .on_conflict_do_nothing(index_elements=["idempotency_key"])
                .returning(Job.id)
            )
            inserted.update(conn.execute(claim, keyed).scalars())
        if plain:
            # No key, no conflict: a bulk insert (COPY on PostgreSQL) with no RETURNING, which
            # would make one huge statement parsed every time.
            insert_new(conn, Job.__table__, plain)
            inserted.update(row["id"] for row in plain)
        return inserted

    @staticmethod
    def _jobs_by_key(conn: Connection, keys: Sequence[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        unique = list(dict.fromkeys(keys))
        # Chunked: SQLite caps bound parameters per statement.
        for start in range(0, len(unique), _KEY_CHUNK):
            chunk = unique[start : start + _KEY_CHUNK]
            for row in conn.execute(select(Job).where(Job.idempotency_key.in_(chunk))):
                job = job_from_row(row)
                found[job.idempotency_key or ""] = job
        return found


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
