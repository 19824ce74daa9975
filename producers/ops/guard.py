"""Guardrails: judge non-base variants against base over a recent window; roll back on a breach."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np
from celery import Celery
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from jobs.broker import beat_entry
from jobs.contracts import BASE_VARIANT, GUARD_TASK, ErrorKind, Status
from jobs.db import engine_for
from jobs.errors import StaleVersion
from jobs.models import Job
from jobs.repository import utcnow
from jobs.rollouts import RolloutStore
from jobs.settings import Settings
from jobs.variants import Registry, load_registry
from producers.ops.rounds import run_rounds

logger = logging.getLogger(__name__)

GUARD_ACTOR = "guard"
# Bad input fails a job whatever the variant; it says nothing about the variant's health.
INPUT_ERRORS = frozenset(
    {ErrorKind.INVALID_IMAGE, ErrorKind.UNKNOWN_ADVISOR, ErrorKind.INVALID_REQUEST}
)


@dataclass(frozen=True)
class GuardThresholds:
    window_hours: float = 6.0
    min_samples: int = 20  # completed jobs of an arm before any rule judges it
    max_failure_rate: float = 0.10
    max_invalid_output_rate: float = 0.05
    max_p95_inference_ratio: float = 1.5  # variant p95 / base p95


class Action(StrEnum):
    OK = "ok"
    HOLD = "hold"  # inconclusive, or breached but already at weight 0
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class ArmStats:
    completed: int  # succeeded + failed, input errors excluded
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
    weights_version: int = 0  # the version judged; a rollback is written only over it

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "action": self.action.value}


def _arm(rows: Sequence[Any]) -> ArmStats:
    judged = [r for r in rows if r.error_kind not in INPUT_ERRORS]
    failed = [r for r in judged if r.status == Status.FAILED]
    times = [r.inference_ms for r in judged if r.status == Status.SUCCEEDED and r.inference_ms]
    p95 = float(np.percentile(times, 95)) if times else None
    invalid = sum(1 for r in failed if r.error_kind == ErrorKind.INVALID_OUTPUT)
    return ArmStats(len(judged), len(failed), invalid, len(times), p95)


def evaluate(
    engine: Engine,
    rollouts: RolloutStore,
    advisor: str,
    *,
    thresholds: GuardThresholds | None = None,
    now: datetime | None = None,
) -> list[GuardDecision]:
    """One decision per non-base variant that has weight or recent jobs for `advisor`."""
    th = thresholds or GuardThresholds()
    now = now or utcnow()
    since = now - timedelta(hours=th.window_hours)
    stmt = select(Job.variant, Job.status, Job.error_kind, Job.inference_ms).where(
        Job.advisor == advisor,
        Job.status.in_([Status.SUCCEEDED, Status.FAILED]),
        Job.completed_at >= since,
        Job.completed_at <= now,
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    by_variant: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_variant[row.variant].append(row)
    read = rollouts.get(advisor)
    weights = read.weights
    base = _arm(by_variant.get(BASE_VARIANT, []))
    candidates = sorted((set(weights) | set(by_variant)) - {BASE_VARIANT})
    return [
        replace(
            _judge(advisor, v, weights.get(v, 0.0), _arm(by_variant.get(v, [])), base, th),
            weights_version=read.version,
        )
        for v in candidates
    ]


def _judge(
    advisor: str, variant: str, weight: float, arm: ArmStats, base: ArmStats, th: GuardThresholds
) -> GuardDecision:
    window = f"last {th.window_hours:g}h"
    is_judged = arm.completed >= th.min_samples
    is_latency_judged = min(arm.inference_samples, base.inference_samples) >= th.min_samples
    breaches = _breaches(arm, base, th, is_latency_judged) if is_judged else []
    if not is_judged:
        action = Action.HOLD
        reason = (
            f"{arm.completed} completed jobs in the {window} (< {th.min_samples}): inconclusive"
        )
    elif breaches:
        action = Action.ROLLBACK if weight > 0 else Action.HOLD
        reason = f"guard: {variant} of {advisor} breached " + "; ".join(breaches) + f" ({window})"
        reason += "" if weight > 0 else "; already at weight 0"
    elif not is_latency_judged:
        action = Action.HOLD
        reason = f"rates within limits; too few timed jobs to compare p95 with base ({window})"
    else:
        action, reason = Action.OK, f"within limits ({window})"
    return GuardDecision(advisor, variant, action, reason, weight, arm, base, tuple(breaches))


def _breaches(
    arm: ArmStats, base: ArmStats, th: GuardThresholds, is_latency_judged: bool
) -> list[str]:
    found = []
    failure_rate = arm.failed / arm.completed
    if failure_rate > th.max_failure_rate:
        found.append(
            f"failure rate {failure_rate:.2f} ({arm.failed}/{arm.completed}) "
            f"> {th.max_failure_rate:.2f}"
        )
    invalid_rate = arm.invalid_output / arm.completed
    if invalid_rate > th.max_invalid_output_rate:
        found.append(
            f"invalid-output rate {invalid_rate:.2f} ({arm.invalid_output}/{arm.completed}) "
            f"> {th.max_invalid_output_rate:.2f}"
        )
    if is_latency_judged and arm.p95_inference_ms and base.p95_inference_ms:
        ratio = arm.p95_inference_ms / base.p95_inference_ms
        if ratio > th.max_p95_inference_ratio:
            found.append(
                f"p95 inference {arm.p95_inference_ms / 1000:.1f}s = {ratio:.2f}x base "
                f"{base.p95_inference_ms / 1000:.1f}s > {th.max_p95_inference_ratio:.2f}x"
            )
    return found


def enforce(
    engine: Engine,
    rollouts: RolloutStore,
    registry: Registry,
    *,
    thresholds: GuardThresholds | None = None,
    advisors: Iterable[str] | None = None,
    now: datetime | None = None,
) -> list[GuardDecision]:
    """Evaluate every advisor with a rollout and move a breaching variant's weight to base."""
    names = list(advisors) if advisors is not None else [w.advisor for w in rollouts.all()]
    decisions: list[GuardDecision] = []
    for advisor in names:
        for decision in evaluate(engine, rollouts, advisor, thresholds=thresholds, now=now):
            if decision.action is Action.ROLLBACK:
                decision = _roll_back(rollouts, registry, decision)
            logger.info("guard %s/%s: %s: %s", advisor, decision.variant, decision.action,
                        decision.reason)  # fmt: skip
            decisions.append(decision)
    return decisions


def _roll_back(store: RolloutStore, registry: Registry, decision: GuardDecision) -> GuardDecision:
    current = store.get(decision.advisor).weights
    if current.get(decision.variant, 0.0) <= 0:
        return replace(decision, action=Action.HOLD, reason=decision.reason + "; already at 0")
    weights = dict(current)
    # The variant's share goes to base; other variants keep theirs.
    weights[BASE_VARIANT] = weights.get(BASE_VARIANT, 0.0) + weights[decision.variant]
    weights[decision.variant] = 0.0
    known = registry.names | set(current)
    try:
        # Over the version judged: an operator's change since then is never overwritten.
        store.set(decision.advisor, weights, known_variants=known, actor=GUARD_ACTOR,
                  reason=decision.reason, kind="guard",
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
    return replace(decision, applied=True)


def register_guard_task(
    app: Celery, settings: Settings, thresholds: GuardThresholds | None = None
) -> Any:
    """Register GUARD_TASK on `app`; schedule it with `beat_schedule()`."""

    @app.task(name=GUARD_TASK, ignore_result=True)
    def guard() -> list[dict[str, Any]]:
        engine = engine_for(settings.resolved_database_url)
        registry = load_registry(settings.registry, settings.base_model)
        decisions = enforce(engine, RolloutStore(engine), registry, thresholds=thresholds)
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
) -> int:
    """Enforce every `interval` seconds until `stop` is set; returns the rounds run."""
    return run_rounds(
        "Guard", lambda: enforce(engine, rollouts, registry, thresholds=thresholds),
        interval=interval, transient=(SQLAlchemyError,), stop=stop, on_round=on_round,
        delay_first=delay_first,
    )  # fmt: skip
