"""The `rollout_plans` table: one open (active or paused) plan per advisor, compare-and-set."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from jobs.clock import as_utc, utcnow
from producers.errors import PlanConflict, PlanNotFound
from store.models import RolloutPlan


class PlanStatus(StrEnum):
    ACTIVE = "active"  # the guard loop advances it
    PAUSED = "paused"  # by an operator, or by a manual `rollout set`; resume continues it
    COMPLETED = "completed"  # its last step is applied
    ROLLED_BACK = "rolled_back"  # the guard (or an operator) rolled the candidate back
    ABORTED = "aborted"  # an operator ended it; the candidate went to 0


OPEN = (PlanStatus.ACTIVE, PlanStatus.PAUSED)


@dataclass(frozen=True)
class Plan:
    id: int
    advisor: str
    variant: str
    steps: tuple[float, ...]
    step: int
    status: PlanStatus
    min_jobs: int
    min_minutes: float
    margin: float
    version: int
    weights_version: int
    step_started_at: datetime
    state: str
    details: dict[str, Any]
    created_at: datetime
    created_by: str
    reason: str
    updated_at: datetime

    @property
    def percent(self) -> float:
        """The candidate's share of the split at the current step, in percent."""
        return self.steps[self.step]

    @property
    def next_percent(self) -> float | None:
        return self.steps[self.step + 1] if self.step + 1 < len(self.steps) else None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            steps=list(self.steps), status=self.status.value, percent=self.percent,
            next_percent=self.next_percent,
        )  # fmt: skip
        for key in ("step_started_at", "created_at", "updated_at"):
            out[key] = out[key].isoformat()
        return out


def _utc(value: datetime) -> datetime:
    stamp = as_utc(value)
    assert stamp is not None  # the columns are NOT NULL
    return stamp


def _plan(row: Any) -> Plan:
    return Plan(
        row.id, row.advisor, row.variant, tuple(float(s) for s in row.steps), row.step,
        PlanStatus(row.status), row.min_jobs, float(row.min_minutes), float(row.margin),
        row.version, row.weights_version, _utc(row.step_started_at), row.state,
        dict(row.details or {}), _utc(row.created_at), row.created_by, row.reason,
        _utc(row.updated_at),
    )  # fmt: skip


class PlanStore:
    """Reads and writes plans; every write is a compare-and-set on the plan's version."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        advisor: str,
        variant: str,
        steps: tuple[float, ...],
        *,
        min_jobs: int,
        min_minutes: float,
        margin: float,
        weights_version: int,
        actor: str,
        reason: str,
        state: str,
        details: dict[str, Any] | None = None,
    ) -> Plan:
        now = utcnow()
        values = dict(
            advisor=advisor, open_advisor=advisor, variant=variant, steps=list(steps), step=0,
            status=PlanStatus.ACTIVE.value, min_jobs=min_jobs, min_minutes=min_minutes,
            margin=margin, version=1, weights_version=weights_version, step_started_at=now,
            state=state, details=details, created_at=now, created_by=actor, reason=reason,
            updated_at=now,
        )  # fmt: skip
        try:
            with self.engine.begin() as conn:
                plan_id = conn.execute(
                    insert(RolloutPlan).values(**values).returning(RolloutPlan.id)
                ).scalar_one()
        except IntegrityError:
            # The unique open_advisor: another open plan won (or was already there).
            raise self._second(advisor) from None
        return self.get(plan_id)

    def _second(self, advisor: str) -> PlanConflict:
        return PlanConflict(
            f"{advisor} already has an open rollout plan; see `advisor rollout plan show "
            f"{advisor}`, and abort it first to start another"
        )

    def get(self, plan_id: int) -> Plan:
        with self.engine.connect() as conn:
            row = conn.execute(select(RolloutPlan).where(RolloutPlan.id == plan_id)).first()
        if row is None:
            raise PlanNotFound(f"No rollout plan with id {plan_id}")
        return _plan(row)

    def open(self, advisor: str) -> Plan | None:
        """The advisor's active or paused plan, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(RolloutPlan).where(RolloutPlan.open_advisor == advisor)
            ).first()
        return _plan(row) if row is not None else None

    def latest(self, advisor: str) -> Plan | None:
        """The open plan, else the most recent one that ended."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(RolloutPlan)
                .where(RolloutPlan.advisor == advisor)
                .order_by(RolloutPlan.id.desc())
                .limit(1)
            ).first()
        return _plan(row) if row is not None else None

    def all_open(self) -> list[Plan]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(RolloutPlan)
                .where(RolloutPlan.open_advisor.is_not(None))
                .order_by(RolloutPlan.advisor)
            ).all()
        return [_plan(r) for r in rows]

    def update(self, plan: Plan, *, match_step: bool = False, **values: Any) -> Plan | None:
        """Write `values` over `plan` as read; None if it changed meanwhile (nothing written).

        `match_step`: compare on the step and its weights version instead of the plan's
        version, so a step taken stays recorded even if a pause or a note came in between.
        """
        if "status" in values:
            status = PlanStatus(values["status"])
            values["status"] = status.value
            values["open_advisor"] = plan.advisor if status in OPEN else None
        guard = (
            (RolloutPlan.step == plan.step, RolloutPlan.weights_version == plan.weights_version)
            if match_step
            else (RolloutPlan.version == plan.version,)
        )
        with self.engine.begin() as conn:
            won = conn.execute(
                update(RolloutPlan)
                .where(RolloutPlan.id == plan.id, *guard)
                .values(version=RolloutPlan.version + 1, updated_at=utcnow(), **values)
            ).rowcount == 1  # fmt: skip
        return self.get(plan.id) if won else None
