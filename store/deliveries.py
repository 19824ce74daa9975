"""The outbox of outcome notices: rows written with their job, claimed once it is final.

A delivery is due when its job is final, its state is `pending`, its retry time (if any)
has come and nobody holds a live claim on it. A sender claims it with one guarded UPDATE,
sends, and records the attempt with another that carries the attempt count it read, so a
sender whose claim lapsed cannot overwrite what a later one recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, and_, or_, select, update

from jobs.clock import as_utc, utcnow
from jobs.contracts import FINAL_STATUSES, DeliveryState
from store.models import Delivery, Job

T = TypeVar("T", Delivery, Job)

# No retry waits longer than this, however many came before.
MAX_BACKOFF_SECONDS = 3600.0


def backoff_seconds(attempts: int, base: float) -> float:
    """The wait after the `attempts`-th failed attempt: base, 2 base, 4 base, ... capped."""
    return float(min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1)))


class DeliveryStore:
    """Delivery rows over one engine: claim, record an attempt, list, retry."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def of_job(self, job_id: str) -> list[Delivery]:
        stmt = select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.created_at)
        with self.engine.connect() as conn:
            return [_row_as(Delivery, row) for row in conn.execute(stmt)]

    def find(self, *criteria: Any, limit: int | None = None) -> list[Delivery]:
        stmt = select(Delivery).where(*criteria).order_by(Delivery.created_at)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [_row_as(Delivery, row) for row in conn.execute(stmt)]

    def claim_due(
        self, *, lease_seconds: float, job_id: str | None = None, limit: int = 100
    ) -> list[tuple[Delivery, Job]]:
        """Due deliveries (of one job, or any) now held by the caller, each with its job."""
        now = utcnow()
        free = or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now)
        due = and_(
            Delivery.state == DeliveryState.PENDING,
            free,
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
            Delivery.job_id.in_(select(Job.id).where(Job.status.in_(list(FINAL_STATUSES)))),
        )
        if job_id is not None:
            due = and_(due, Delivery.job_id == job_id)
        claimed: list[tuple[Delivery, Job]] = []
        with self.engine.connect() as conn:
            candidates = [
                _row_as(Delivery, row)
                for row in conn.execute(
                    select(Delivery).where(due).order_by(Delivery.created_at).limit(limit)
                )
            ]
        for delivery in candidates:
            with self.engine.begin() as conn:
                res = conn.execute(
                    update(Delivery)
                    .where(Delivery.id == delivery.id, Delivery.state == DeliveryState.PENDING,
                           Delivery.attempts == delivery.attempts, free)
                    .values(claimed_until=now + timedelta(seconds=lease_seconds))
                )  # fmt: skip
                if res.rowcount != 1:
                    continue  # another sender claimed it in between
                row = conn.execute(select(Job).where(Job.id == delivery.job_id)).first()
            if row is not None:
                claimed.append((delivery, _row_as(Job, row)))
        return claimed

    def record(
        self,
        delivery: Delivery,
        attempt: dict[str, Any],
        *,
        delivered: bool,
        give_up: bool,
        retry_in: float,
    ) -> bool:
        """Close the claim with this attempt's entry; False if the claim was lost meanwhile."""
        now = utcnow()
        values: dict[str, Any] = {
            "attempts": delivery.attempts + 1,
            "log": [*(delivery.log or []), attempt],
            "claimed_until": None,
            # The operator's fuller reason where there is one; tenants read the attempt's error.
            "last_error": None if delivered else attempt.get("detail") or attempt.get("error"),
        }
        if delivered:
            values.update(state=DeliveryState.DELIVERED, delivered_at=now, next_attempt_at=None)
        elif give_up:
            values.update(state=DeliveryState.UNDELIVERED, next_attempt_at=None)
        else:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in)
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Delivery)
                .where(
                    Delivery.id == delivery.id,
                    Delivery.state == DeliveryState.PENDING,
                    Delivery.attempts == delivery.attempts,
                )
                .values(**values)
            )
        return res.rowcount == 1

    def retry_undelivered(self, job_ids: Sequence[str] | None = None) -> list[str]:
        """Undelivered -> pending with a fresh attempt budget (the log keeps the history)."""
        criteria = [Delivery.state == DeliveryState.UNDELIVERED]
        if job_ids:
            criteria.append(Delivery.job_id.in_(list(job_ids)))
        with self.engine.begin() as conn:
            ids = list(conn.scalars(select(Delivery.id).where(*criteria)))
            if ids:
                conn.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids), Delivery.state == DeliveryState.UNDELIVERED)
                    .values(
                        state=DeliveryState.PENDING, attempts=0, next_attempt_at=None,
                        claimed_until=None,
                    )
                )  # fmt: skip
        return ids


def _row_as(table: type[T], row: Any) -> T:
    values = {k: as_utc(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()}
    return table(**values)
