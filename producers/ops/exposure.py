"""Rollout state from the audit trail: the weights at a time, and when each exposure began.

The guard judges a candidate on one growing sequence: the jobs that finished since its
current exposure began, i.e. the rollout event at which its weight last went from 0 (or
absent) to > 0. Plan steps that only move a positive weight keep that sequence; a rollback
to 0 followed by a new exposure starts a fresh one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from jobs.clock import as_utc
from jobs.contracts import BASE_VARIANT
from store.models import RolloutEvent


@dataclass(frozen=True)
class RolloutState:
    """An advisor's weights and version at some time, with each exposure's start."""

    weights: dict[str, float]
    version: int
    starts: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightChange:
    """One event of the audit trail, reduced to what the state needs."""

    version: int
    weights: dict[str, float]
    at: datetime


def weight_changes(engine: Engine, advisor: str) -> list[WeightChange]:
    """Every recorded event of `advisor`, oldest first (notes repeat the current weights)."""
    stmt = (
        select(RolloutEvent.version, RolloutEvent.new_weights, RolloutEvent.created_at)
        .where(RolloutEvent.advisor == advisor)
        .order_by(RolloutEvent.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [WeightChange(int(v), dict(w), _utc(at)) for v, w, at in rows]


def _utc(value: Any) -> datetime:
    at = as_utc(value)
    assert at is not None, "rollout events always carry created_at"
    return at


def state_at(changes: Sequence[WeightChange], at: datetime) -> RolloutState:
    """The weights, version and exposure starts as recorded up to `at` (inclusive)."""
    weights: dict[str, float] = {BASE_VARIANT: 1.0}
    version = 0
    starts: dict[str, datetime] = {}
    for change in changes:
        if change.at > at:
            continue  # recorded later: not yet known at `at`
        for variant, weight in change.weights.items():
            if weight > 0 and weights.get(variant, 0.0) <= 0:
                starts[variant] = change.at
        weights, version = dict(change.weights), change.version
    return RolloutState(weights, version, starts)
