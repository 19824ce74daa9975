"""Sample-ratio mismatch: split jobs per variant at each stage vs the weights of their version."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from jobs.contracts import BASE_VARIANT, Assignment, Status
from store.models import Rollout, RolloutEvent

SRM_STAGES = ("routed", "started", "finished")
# SRM is a data-quality alarm checked often, so it needs a much stricter threshold.
SRM_ALPHA = 0.001
# Chi-square's usual validity condition: every expected cell count at least 5.
MIN_EXPECTED_PER_CELL = 5.0


@dataclass(frozen=True)
class SrmCheck:
    """Sample-ratio mismatch of one (advisor, weights_version) at one stage."""

    advisor: str
    weights_version: int
    stage: str
    weights: dict[str, float] | None
    observed: dict[str, int]
    chi2: float | None
    p: float | None
    is_mismatch: bool
    note: str


def srm_check(
    advisor: str,
    weights_version: int,
    stage: str,
    observed: Mapping[str, int],
    weights: Mapping[str, float] | None,
    *,
    alpha: float = SRM_ALPHA,
) -> SrmCheck:
    """Chi-square goodness of fit of `observed` counts against the configured `weights`."""
    counts = dict(sorted(observed.items()))
    conf = dict(weights) if weights is not None else None

    def result(chi2: float | None, p: float | None, mismatch: bool, note: str) -> SrmCheck:
        return SrmCheck(advisor, weights_version, stage, conf, counts, chi2, p, mismatch, note)

    if conf is None:
        return result(None, None, False, "weights of this version are unknown")
    positive = {v: w for v, w in conf.items() if w > 0}
    stray = {v: n for v, n in counts.items() if n > 0 and v not in positive}
    if stray:
        return result(None, 0.0, True, f"split jobs on zero-weight variant(s) {stray}")
    if len(positive) < 2:
        return result(None, None, False, "a single variant: nothing to compare")
    total = sum(counts.values())
    scale = sum(positive.values())
    expected = [total * w / scale for w in positive.values()]
    if min(expected) < MIN_EXPECTED_PER_CELL:
        return result(None, None, False, "not enough data")
    from scipy import stats  # lazily: commands that only read a plan skip scipy

    res = stats.chisquare([counts.get(v, 0) for v in positive], expected)
    chi2, p = float(res.statistic), float(res.pvalue)
    mismatch = p < alpha
    return result(chi2, p, mismatch, "sample ratio mismatch" if mismatch else "ok")


def srm_checks(engine: Engine, rows: Sequence[Any]) -> list[SrmCheck]:
    """Checks per (advisor, weights_version, stage) over job rows (the report's columns)."""
    # Counted under the variant the router chose: a recorded drain is not a silent drop.
    counts: dict[tuple[str, int], dict[str, dict[str, int]]] = defaultdict(
        lambda: {stage: defaultdict(int) for stage in SRM_STAGES}
    )
    for r in rows:
        if r.assignment != Assignment.SPLIT:
            continue
        stages = counts[(r.advisor, r.weights_version)]
        routed = r.reassigned_from or r.variant
        stages["routed"][routed] += 1
        stages["started"][routed] += r.started_at is not None
        stages["finished"][routed] += r.status == Status.SUCCEEDED
    weights = _configured_weights(engine, {advisor for advisor, _ in counts})
    return [
        srm_check(advisor, version, stage, counts[(advisor, version)][stage], weights.get(
            (advisor, version), {BASE_VARIANT: 1.0} if version == 0 else None))
        for advisor, version in sorted(counts)
        for stage in SRM_STAGES
    ]  # fmt: skip


def _configured_weights(
    engine: Engine, advisors: set[str]
) -> dict[tuple[str, int], dict[str, float]]:
    """Weights per (advisor, version), from the audit trail, else the current rollout row."""
    if not advisors:
        return {}
    with engine.connect() as conn:
        current = conn.execute(
            select(Rollout.advisor, Rollout.version, Rollout.weights).where(
                Rollout.advisor.in_(advisors)
            )
        ).all()
        events = conn.execute(
            select(RolloutEvent.advisor, RolloutEvent.version, RolloutEvent.new_weights)
            .where(RolloutEvent.advisor.in_(advisors))
            .order_by(RolloutEvent.id)
        ).all()
    found = {(a, v): dict(w) for a, v, w in current}
    found.update({(a, v): dict(w) for a, v, w in events})
    return found
