"""Rollout weights (and shadow share) per advisor, versioned, with an audit trail."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update

from jobs.clock import as_utc, utcnow
from jobs.contracts import BASE_VARIANT
from jobs.errors import InvalidWeights, StaleVersion
from store.dialect import insert_for
from store.models import Rollout, RolloutEvent


@dataclass(frozen=True)
class Weights:
    advisor: str
    weights: dict[str, float]
    version: int
    updated_at: datetime | None
    updated_by: str
    reason: str
    # Share of split jobs also run on the other arm as shadow jobs (0: no pairing).
    shadow: float = 0.0


def _stale(advisor: str, expected: int, current: int | None) -> StaleVersion:
    current = current or 0
    return StaleVersion(
        f"Weights of {advisor!r} are at version {current}, not {expected}: they changed "
        "meanwhile; read them again (`advisor rollout show`) and retry with the current version",
        advisor=advisor,
        expected=expected,
        current=current,
    )


def default_weights(advisor: str) -> Weights:
    """Before any rollout is set, every advisor goes to base (version 0)."""
    return Weights(advisor, {BASE_VARIANT: 1.0}, 0, None, "default", "no rollout set")


def validate_weights(weights: dict[str, float], known_variants: set[str]) -> dict[str, float]:
    """Known variants, finite non-negative weights, positive sum; returns them normalised."""
    unknown = sorted(set(weights) - known_variants)
    if unknown:
        raise InvalidWeights(f"Unknown variant(s) {unknown}; known: {sorted(known_variants)}")
    bad = {k: v for k, v in weights.items() if not math.isfinite(v) or v < 0}
    if bad:
        raise InvalidWeights(f"Weights must be finite and >= 0, got {bad}")
    largest = max(weights.values(), default=0.0)
    if largest <= 0:
        raise InvalidWeights("Weights must sum to more than 0; give base a positive weight")
    try:
        total = math.fsum(weights.values())
    except OverflowError:
        total = math.inf
    # Scale by the largest only when the sum overflows (1e308 + 1e308 is inf, v / inf is 0):
    # dividing always would turn 0.9/0.1 into 0.8999999999999999/0.09999999999999999.
    scaled = dict(sorted(weights.items()))
    if not math.isfinite(total):
        scaled = {k: v / largest for k, v in scaled.items()}
        total = math.fsum(scaled.values())
    normalised = {k: v / total for k, v in scaled.items()}
    check_split(normalised)
    return normalised


def check_split(weights: dict[str, float]) -> None:
    """The stored invariant, checked on the value about to be stored: finite, >= 0, sum 1."""
    values = list(weights.values())
    if not all(math.isfinite(v) and v >= 0 for v in values) or not math.isclose(
        math.fsum(values), 1.0, rel_tol=1e-9
    ):
        raise InvalidWeights(f"Weights {weights} do not form a split (finite, >= 0, sum 1)")


def validate_shadow(shadow: float) -> float:
    if not math.isfinite(shadow) or not 0 <= shadow <= 1:
        raise InvalidWeights(f"The shadow share must be between 0 and 1, got {shadow}")
    return float(shadow)


class RolloutStore:
    """Reads and writes the `rollouts` and `rollout_events` tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, advisor: str) -> Weights:
        with self.engine.connect() as conn:
            row = conn.execute(select(Rollout).where(Rollout.advisor == advisor)).first()
        if row is None:
            return default_weights(advisor)
        return Weights(
            row.advisor, dict(row.weights), row.version, as_utc(row.updated_at),
            row.updated_by, row.reason, float(row.shadow or 0.0),
        )  # fmt: skip

    def all(self) -> list[Weights]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(Rollout.advisor).order_by(Rollout.advisor)).scalars().all()
        return [self.get(a) for a in rows]

    def set(
        self,
        advisor: str,
        weights: dict[str, float],
        *,
        known_variants: set[str],
        actor: str,
        reason: str,
        kind: str = "set",
        shadow: float | None = None,
        details: dict[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> Weights:
        """Replace the weights, bump the version and record the change, in one transaction.

        `shadow` None keeps the advisor's current shadow share; `details` (e.g. the guard's
        statistics) is stored on the event.

        Compare-and-set: with `expected_version` (the version the caller's decision was based
        on) the write happens only if that is still the current version, else StaleVersion
        names the current one. Without it, the write still cannot interleave with another.
        """
        if not reason.strip():
            raise InvalidWeights("A reason is required for every rollout change (--reason)")
        normalised = validate_weights(weights, known_variants)
        new_shadow = validate_shadow(shadow) if shadow is not None else None
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(select(Rollout).where(Rollout.advisor == advisor)).first()
            old = dict(row.weights) if row is not None else None
            current = row.version if row is not None else 0
            if expected_version is not None and expected_version != current:
                raise _stale(advisor, expected_version, current)
            version = current + 1
            if new_shadow is None:
                new_shadow = float(row.shadow or 0.0) if row is not None else 0.0
            values = {"weights": normalised, "version": version, "updated_at": now,
                      "updated_by": actor, "reason": reason, "shadow": new_shadow}  # fmt: skip
            if row is None:
                # A concurrent first write wins the insert; this one then lost the race.
                won = conn.execute(
                    self._insert_ignore()
                    .values(advisor=advisor, **values)
                    .returning(Rollout.advisor)
                ).first() is not None  # fmt: skip
            else:
                won = conn.execute(
                    update(Rollout)
                    .where(Rollout.advisor == advisor, Rollout.version == current)
                    .values(**values)
                ).rowcount == 1  # fmt: skip
            if not won:
                # Read committed: this statement sees the version the other writer committed.
                now_at = conn.scalar(select(Rollout.version).where(Rollout.advisor == advisor))
                raise _stale(advisor, current, now_at)
            conn.execute(
                insert(RolloutEvent).values(
                    advisor=advisor, version=version, kind=kind, old_weights=old,
                    new_weights=normalised, actor=actor, reason=reason, created_at=now,
                    shadow=new_shadow, details=details,
                )
            )  # fmt: skip
        return Weights(advisor, normalised, version, now, actor, reason, new_shadow)

    def note(
        self, advisor: str, *, kind: str, actor: str, reason: str, details: dict[str, Any]
    ) -> None:
        """An audit event that changes nothing (e.g. a guard decision): the current version."""
        current = self.get(advisor)
        if current.version == 0:
            return  # no rollout row to attach an event to: nothing was ever set
        with self.engine.begin() as conn:
            conn.execute(
                insert(RolloutEvent).values(
                    advisor=advisor, version=current.version, kind=kind,
                    old_weights=current.weights, new_weights=current.weights, actor=actor,
                    reason=reason, created_at=utcnow(), shadow=current.shadow, details=details,
                )
            )  # fmt: skip

    def _insert_ignore(self) -> Any:
        return insert_for(self.engine, Rollout).on_conflict_do_nothing(index_elements=["advisor"])

    def history(self, advisor: str | None = None, limit: int = 50) -> list[RolloutEvent]:
        stmt = select(RolloutEvent).order_by(RolloutEvent.id.desc()).limit(limit)
        if advisor is not None:
            stmt = stmt.where(RolloutEvent.advisor == advisor)
        with self.engine.connect() as conn:
            return [RolloutEvent(**r._mapping) for r in conn.execute(stmt)]
