"""Guard replay: the decisions the guard would have taken at each past round; writes nothing.

Each round sees what a live `enforce(now=t)` would have seen: the jobs finished by t and
the rollout history recorded by t. A rollback the replayed guard decides is carried on (the
variant at weight 0, one version up) until the recorded history moves to a new version.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine

from jobs.clock import as_utc
from jobs.contracts import BASE_VARIANT
from producers.ops.exposure import RolloutState, state_at, weight_changes
from producers.ops.guard import Action, GuardDecision, GuardThresholds, decide, finished_rows


@dataclass(frozen=True)
class ReplayRound:
    """One variant's decision at one round, with the rule behind it."""

    at: datetime
    variant: str
    action: str
    rule: str | None  # the first breached rule, else the one closest to breaching
    p: float | None
    estimate: float | None  # that rule's value (a rate, or the time ratio)
    ci_low: float | None
    ci_high: float | None
    weights_version: int
    weight: float
    reason: str

    @classmethod
    def of(cls, at: datetime, decision: GuardDecision) -> ReplayRound:
        rule = decision.deciding
        return cls(
            at, decision.variant, decision.action.value, rule.rule if rule else None,
            rule.p if rule else None, rule.variant_value if rule else None,
            rule.ci_low if rule else None, rule.ci_high if rule else None,
            decision.weights_version, decision.weight, decision.reason,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


def _rolled_back(state: RolloutState, rolled: dict[str, int]) -> RolloutState:
    """`state` with the replay's own rollbacks applied while the recorded version stands."""
    weights, version = dict(state.weights), state.version
    for variant, at_version in rolled.items():
        if at_version == state.version and weights.get(variant, 0.0) > 0:
            weights[BASE_VARIANT] = weights.get(BASE_VARIANT, 0.0) + weights[variant]
            weights[variant] = 0.0
            version = state.version + 1
    return RolloutState(weights, version, state.starts)


def replay(
    engine: Engine,
    advisor: str,
    *,
    start: datetime,
    end: datetime,
    every: timedelta,
    thresholds: GuardThresholds | None = None,
) -> list[ReplayRound]:
    """The guard's decisions for `advisor` at start, start + every, ... up to end."""
    th = thresholds or GuardThresholds()
    changes = weight_changes(engine, advisor)
    since = min([c.at for c in changes] + [start - timedelta(hours=th.window_hours)])
    rows = finished_rows(engine, advisor, since, end)
    times = [cast(datetime, as_utc(r.completed_at)) for r in rows]
    rolled: dict[str, int] = {}  # variant -> the recorded version the replay rolled it back at
    out: list[ReplayRound] = []
    at = start
    while at <= end:
        recorded = state_at(changes, at)
        state = _rolled_back(recorded, rolled)
        for decision in decide(advisor, rows[: bisect_right(times, at)], state, th, at):
            if decision.action is Action.ROLLBACK:
                rolled[decision.variant] = recorded.version
            out.append(ReplayRound.of(at, decision))
        at += every
    return out
