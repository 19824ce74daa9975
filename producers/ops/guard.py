"""The guard: judge each candidate against base on one growing sequence; roll back on a breach.

Every rule is an always-valid sequential test (producers/ops/guardrails.py) over the jobs
that finished since the candidate's current exposure began (producers/ops/exposure.py), so
reading it every minute for weeks keeps the false-rollback rate within alpha. A fresh test
on a sliding window each round would be a new test every round (docs/statistics.md).
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

import numpy as np
from celery import Celery
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from jobs.broker import beat_entry
from jobs.clock import as_utc, utcnow
from jobs.contracts import BASE_VARIANT, GUARD_TASK, ErrorKind, Status
from jobs.errors import StaleVersion
from jobs.settings import Settings
from jobs.variants import Registry, load_registry_for
from producers.errors import StatisticsError
from producers.ops.exposure import RolloutState, state_at, weight_changes
from producers.ops.guardrails import Limits, RuleCheck, check_rules, judged
from producers.ops.plans import PlanControl, plan_control_for
from producers.ops.rounds import run_rounds
from producers.rollouts import RolloutStore
from store.db import engine_for
from store.models import Job

logger = logging.getLogger(__name__)

GUARD_ACTOR = "guard"
CHECK_KIND = "guard-check"


@dataclass(frozen=True)
class GuardThresholds:
    # Only for a variant with no recorded exposure (no rollout history): the last N hours.
    window_hours: float = 6.0
    max_failure_rate: float = Limits.max_failure_rate  # absolute caps
    max_invalid_output_rate: float = Limits.max_invalid_output_rate
    max_inference_ratio: float = Limits.max_inference_ratio  # geometric mean, variant / base
    alpha: float = Limits.alpha

    @property
    def limits(self) -> Limits:
        return Limits(self.max_failure_rate, self.max_invalid_output_rate,
                      self.max_inference_ratio, self.alpha)  # fmt: skip


class Action(StrEnum):
    OK = "ok"  # no rule breached (each is always valid: re-checked every round)
    HOLD = "hold"  # no finished split job to judge, or breached but already at weight 0
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class ArmStats:
    completed: int  # finished split jobs, input errors excluded
    failed: int
    invalid_output: int
    inference_samples: int
    p95_inference_ms: float | None


@dataclass(frozen=True)
class GuardDecision:
    advisor: str
    variant: str
    action: Action
    reason: str
    weight: float
    variant_stats: ArmStats
    base_stats: ArmStats
    breaches: tuple[str, ...] = ()
    applied: bool = False  # the rollback was written
    checks: tuple[RuleCheck, ...] = ()
    weights_version: int = 0  # the version judged; a rollback is written only over it
    # The judged sequence: jobs finished since then (its exposure's start, else the window).
    sequence_start: datetime | None = None
    is_fallback_window: bool = False  # no recorded exposure: the last window_hours instead

    def to_dict(self) -> dict[str, Any]:
        start = self.sequence_start.isoformat() if self.sequence_start else None
        return {**asdict(self), "action": self.action.value, "sequence_start": start}

    @property
    def deciding(self) -> RuleCheck | None:
        """The rule behind the action: the first breach, else the one closest to breaching."""
        breached = [c for c in self.checks if c.breached]
        if breached:
            return breached[0]
        return min(self.checks, key=lambda c: c.p, default=None)


def _arm(rows: Sequence[Any]) -> ArmStats:
    failed = [r for r in rows if r.status == Status.FAILED]
    times = [r.inference_ms for r in rows if r.status == Status.SUCCEEDED and r.inference_ms]
    p95 = float(np.percentile(times, 95)) if times else None
    invalid = sum(1 for r in failed if r.error_kind == ErrorKind.INVALID_OUTPUT)
    return ArmStats(len(rows), len(failed), invalid, len(times), p95)


def evaluate(
    engine: Engine,
    rollouts: RolloutStore,
    advisor: str,
    *,
    thresholds: GuardThresholds | None = None,
    now: datetime | None = None,
) -> list[GuardDecision]:
    """One decision per non-base variant that has weight or judged jobs for `advisor`, each
    over the jobs finished since its current exposure began, up to `now`."""
    th = thresholds or GuardThresholds()
    now = now or utcnow()
    read = rollouts.get(advisor)
    recorded = state_at(weight_changes(engine, advisor), now)
    state = RolloutState(read.weights, read.version, recorded.starts)
    since = min([*state.starts.values(), now - timedelta(hours=th.window_hours)])
    return decide(advisor, finished_rows(engine, advisor, since, now), state, th, now)


def finished_rows(engine: Engine, advisor: str, since: datetime, until: datetime) -> list[Any]:
    """The judged split jobs of `advisor` finished in [since, until], in completion order."""
    stmt = select(
        Job.variant, Job.status, Job.error_kind, Job.inference_ms, Job.assignment,
        Job.completed_at,
    ).where(
        Job.advisor == advisor,
        Job.status.in_([Status.SUCCEEDED, Status.FAILED]),
        Job.completed_at >= since,
        Job.completed_at <= until,
    )  # fmt: skip
    with engine.connect() as conn:
        return judged(conn.execute(stmt).all())


def decide(
    advisor: str,
    rows: Sequence[Any],
    state: RolloutState,
    th: GuardThresholds,
    now: datetime,
) -> list[GuardDecision]:
    """The decisions over judged `rows` (completion order, none after `now`) in `state`."""
    # judged() keeps only rows with completed_at; SQLite hands them back naive.
    times = [cast(datetime, as_utc(r.completed_at)) for r in rows]
    candidates = sorted((set(state.weights) | {r.variant for r in rows}) - {BASE_VARIANT})
    out = []
    for variant in candidates:
        start = state.starts.get(variant)
        since = start if start is not None else now - timedelta(hours=th.window_hours)
        mine = rows[bisect_left(times, since) :]
        arm = _arm([r for r in mine if r.variant == variant])
        base = _arm([r for r in mine if r.variant == BASE_VARIANT])
        weight = state.weights.get(variant, 0.0)
        decision = _judge(advisor, variant, weight, mine, arm, base, th, since, start is None)
        out.append(replace(decision, weights_version=state.version, sequence_start=since,
                           is_fallback_window=start is None))  # fmt: skip
    return out


def _judge(
    advisor: str,
    variant: str,
    weight: float,
    rows: Sequence[Any],
    arm: ArmStats,
    base: ArmStats,
    th: GuardThresholds,
    since: datetime,
    is_fallback: bool,
) -> GuardDecision:
    if is_fallback:
        window = f"last {th.window_hours:g}h: no recorded exposure"
    else:
        window = f"one sequence since {since:%Y-%m-%d %H:%M} UTC"
    try:
        checks = tuple(check_rules(rows, variant, th.limits))
    except StatisticsError as exc:
        # Bad data is named and held for a person, never judged on a p-value computed on it.
        reason = f"cannot judge {variant} of {advisor}: {exc} ({window})"
        return GuardDecision(advisor, variant, Action.HOLD, reason, weight, arm, base)
    breaches = tuple(c.describe() for c in checks if c.breached)
    if breaches:
        action = Action.ROLLBACK if weight > 0 else Action.HOLD
        reason = f"guard: {variant} of {advisor} breached " + "; ".join(breaches) + f" ({window})"
        reason += "" if weight > 0 else "; already at weight 0"
    elif arm.completed == 0:
        action, reason = Action.HOLD, f"no finished split job of {variant} ({window})"
    else:
        action = Action.OK
        reason = f"no rule breached over {arm.completed} jobs ({window}, sequential tests)"
    return GuardDecision(advisor, variant, action, reason, weight, arm, base, breaches,
                         checks=checks)  # fmt: skip


def enforce(
    engine: Engine,
    rollouts: RolloutStore,
    registry: Registry,
    *,
    thresholds: GuardThresholds | None = None,
    advisors: Iterable[str] | None = None,
    now: datetime | None = None,
    plans: PlanControl | None = None,
) -> list[GuardDecision]:
    """Evaluate every advisor with a rollout and move a breaching variant's weight to base.

    A rollback's event carries the decision's statistics; so does a `guard-check` event
    whenever a variant's decision differs from the last one recorded for it. Then `plans`
    steps the active rollout plans (producers/ops/plan_rounds.py), given these decisions.
    """
    th = thresholds or GuardThresholds()
    names = list(advisors) if advisors is not None else [w.advisor for w in rollouts.all()]
    decisions: list[GuardDecision] = []
    for advisor in names:
        for decision in evaluate(engine, rollouts, advisor, thresholds=th, now=now):
            if decision.action is Action.ROLLBACK:
                decision = _roll_back(rollouts, registry, decision, th)
            else:
                _note_change(rollouts, decision, th)
            logger.info("guard %s/%s: %s: %s", advisor, decision.variant, decision.action,
                        decision.reason)  # fmt: skip
            decisions.append(decision)
    if plans is not None:
        plans.step_all(decisions, advisors=None if advisors is None else names, now=now)
    return decisions


def statistics(decision: GuardDecision, th: GuardThresholds) -> dict[str, Any]:
    """What a decision was taken on, for its rollout event."""
    return {
        "variant": decision.variant,
        "action": decision.action.value,
        "sequence_start": decision.sequence_start.isoformat() if decision.sequence_start else None,
        "is_fallback_window": decision.is_fallback_window,
        "window_hours": th.window_hours,  # used only when is_fallback_window
        "alpha": th.alpha,
        "variant_stats": asdict(decision.variant_stats),
        "base_stats": asdict(decision.base_stats),
        "checks": [asdict(c) for c in decision.checks],
    }


def _note_change(store: RolloutStore, decision: GuardDecision, th: GuardThresholds) -> None:
    recorded = [
        e for e in store.history(decision.advisor)
        if e.kind in ("guard", CHECK_KIND) and (e.details or {}).get("variant") == decision.variant
    ]  # fmt: skip
    last = recorded[0] if recorded else None
    if last is not None and (last.details or {}).get("action") == decision.action.value:
        return
    store.note(decision.advisor, kind=CHECK_KIND, actor=GUARD_ACTOR, reason=decision.reason,
               details=statistics(decision, th))  # fmt: skip


def _roll_back(
    store: RolloutStore, registry: Registry, decision: GuardDecision, th: GuardThresholds
) -> GuardDecision:
    current = store.get(decision.advisor)
    if current.weights.get(decision.variant, 0.0) <= 0:
        return replace(decision, action=Action.HOLD, reason=decision.reason + "; already at 0")
    weights = dict(current.weights)
    # The variant's share goes to base; other variants keep theirs.
    weights[BASE_VARIANT] = weights.get(BASE_VARIANT, 0.0) + weights[decision.variant]
    weights[decision.variant] = 0.0
    # Shadows go on only while another candidate keeps traffic to pair base with.
    others = any(w > 0 for v, w in weights.items() if v != BASE_VARIANT)
    known = registry.names | set(current.weights)
    applied = replace(decision, applied=True)
    try:
        # Over the version judged: an operator's change since then is never overwritten.
        store.set(decision.advisor, weights, known_variants=known, actor=GUARD_ACTOR,
                  reason=decision.reason, kind="guard", shadow=None if others else 0.0,
                  details=statistics(applied, th),
                  expected_version=decision.weights_version)  # fmt: skip
    except StaleVersion as exc:
        logger.warning("guard: %s; judged again next round", exc)
        return replace(
            decision, action=Action.HOLD,
            reason=decision.reason + f"; weights changed meanwhile (now v{exc.current}), "
            "judged again next round",
        )  # fmt: skip
    logger.warning("guard rolled back %s/%s: %s", decision.advisor, decision.variant,
                   decision.reason)  # fmt: skip
    return applied


def register_guard_task(
    app: Celery, settings: Settings, thresholds: GuardThresholds | None = None
) -> Any:
    """Register GUARD_TASK on `app`; schedule it with `beat_schedule()`."""

    @app.task(name=GUARD_TASK, ignore_result=True)
    def guard() -> list[dict[str, Any]]:
        engine = engine_for(settings.resolved_database_url)
        registry = load_registry_for(settings)
        rollouts = RolloutStore(engine)
        plans = plan_control_for(settings, engine, registry, rollouts)
        decisions = enforce(engine, rollouts, registry, thresholds=thresholds, plans=plans)
        return [d.to_dict() for d in decisions]

    return guard


def beat_schedule(interval_seconds: float, *, queue: str | None = None) -> dict[str, Any]:
    """The entry for `app.conf.beat_schedule`; a run older than one interval is dropped."""
    return beat_entry("advisor-guard", GUARD_TASK, interval_seconds, queue=queue)


def run_loop(
    engine: Engine,
    rollouts: RolloutStore,
    registry: Registry,
    *,
    interval: float,
    thresholds: GuardThresholds | None = None,
    stop: threading.Event | None = None,
    on_round: Callable[[list[GuardDecision]], None] | None = None,
    delay_first: bool = False,
    plans: PlanControl | None = None,
) -> int:
    """Enforce every `interval` seconds until `stop` is set; returns the rounds run."""
    return run_rounds(
        "Guard", lambda: enforce(engine, rollouts, registry, thresholds=thresholds, plans=plans),
        interval=interval, transient=(SQLAlchemyError,), stop=stop, on_round=on_round,
        delay_first=delay_first,
    )  # fmt: skip
