"""The step decision of a rollout plan: its steps, a step's weights, and the gate a step must
pass to advance (the guard's round, producers/ops/plan_rounds.py, applies it).

The gate passes when the candidate has `min_jobs` finished split jobs and `min_minutes` have
passed since the step began, every guardrail holds, and the primary metric's always-valid
interval (candidate - base) has its low end at or above `-margin` (non-inferiority). The
guardrails and the metric are read over the candidate's exposure sequence
(producers/ops/exposure.py), the one the guard judges, so guard, plan and dashboard give
one answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from jobs.clock import as_utc, utcnow
from jobs.contracts import BASE_VARIANT
from producers.errors import InvalidPlan
from producers.ops.evidence import finished_since
from producers.ops.exposure import state_at, weight_changes
from producers.ops.guardrails import judged
from producers.ops.report_rows import JobRow
from producers.ops.sequential import MIN_PER_ARM
from producers.ops.stats import NOT_ENOUGH_DATA
from producers.ops.verdicts import UNPAIRED_METRIC, Verdict, verdicts
from producers.plans import Plan
from producers.rollouts import Weights

DEFAULT_MIN_JOBS = 30
DEFAULT_MIN_MINUTES = 30.0
DEFAULT_MARGIN = 0.5  # points on the primary metric's scale (rating 1-5, overall_score 1-10)


def parse_steps(text: str) -> tuple[float, ...]:
    """ "5,25,50,100" -> (5.0, 25.0, 50.0, 100.0): strictly increasing, each in (0, 100]."""
    try:
        steps = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidPlan(f"Steps {text!r}: expected percentages such as 5,25,50,100") from None
    return check_steps(steps)


def check_steps(steps: Sequence[float]) -> tuple[float, ...]:
    steps = tuple(float(s) for s in steps)
    if not steps:
        raise InvalidPlan("A plan needs at least one step, e.g. --steps 5,25,50,100")
    bad = [s for s in steps if not math.isfinite(s) or not 0 < s <= 100]
    if bad:
        raise InvalidPlan(f"Steps must be percentages in (0, 100], got {bad}")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise InvalidPlan(f"Steps must increase, got {list(steps)}")
    return steps


def step_weights(weights: Weights, variant: str, percent: float) -> dict[str, float]:
    """The candidate at `percent`, base the rest; any other variant goes to 0 for the plan."""
    others = {v: 0.0 for v in weights.weights if v not in (variant, BASE_VARIANT)}
    share = percent / 100
    return {**others, BASE_VARIANT: 1 - share, variant: share}


@dataclass(frozen=True)
class Gate:
    """One check of a plan's current step: advance when `passed`, else `holds` says why."""

    passed: bool
    holds: tuple[str, ...]
    statistics: dict[str, Any]


def exposure_start(engine: Engine, plan: Plan, now: datetime) -> datetime:
    """When the candidate's current exposure began (its weight last went from 0 to > 0)."""
    starts = state_at(weight_changes(engine, plan.advisor), now).starts
    return starts.get(plan.variant, plan.step_started_at)


def _finished(rows: Iterable[JobRow], variant: str, since: datetime) -> int:
    """Finished split jobs of `variant` since `since` that say something about it."""
    return sum(
        1 for r in judged(list(rows))
        if r.variant == variant and (as_utc(r.completed_at) or since) >= since
    )  # fmt: skip


def _silence(verdict: Verdict) -> str:
    """Why a verdict has no interval yet: the jobs per arm it still needs, or its data's fault."""
    if verdict.decision != NOT_ENOUGH_DATA or verdict.metric != UNPAIRED_METRIC:
        return f"no always-valid interval yet for {verdict.metric}: {verdict.decision}"
    more_variant = max(0, MIN_PER_ARM - verdict.n_variant)
    more_base = max(0, MIN_PER_ARM - verdict.n_base)
    return (
        f"{verdict.metric} is silent below {MIN_PER_ARM} scored jobs per arm: needs "
        f"{more_variant} more {verdict.variant} and {more_base} more {BASE_VARIANT} jobs"
    )


def check_gate(engine: Engine, plan: Plan, now: datetime | None = None) -> Gate:
    """Whether the current step may advance, with the statistics the answer rests on."""
    now = now or utcnow()
    exposed = exposure_start(engine, plan, now)
    step_began = plan.step_started_at
    # The step's counts are a subset of the exposure: read it once, from the earlier of the two.
    rows, feedback = finished_since(engine, plan.advisor, min(exposed, step_began), now)
    in_exposure = [r for r in rows if (as_utc(r.completed_at) or exposed) >= exposed]
    jobs = _finished(rows, plan.variant, step_began)
    minutes = (now - plan.step_started_at).total_seconds() / 60
    verdict = next((v for v in verdicts(in_exposure, feedback) if v.variant == plan.variant), None)
    holds = []
    if jobs < plan.min_jobs:
        holds.append(f"{jobs} of {plan.min_jobs} finished {plan.variant} jobs")
    if minutes < plan.min_minutes:
        holds.append(f"{minutes:.1f} of {plan.min_minutes:g} minutes")
    stats: dict[str, Any] = {
        "step": plan.step,
        "percent": plan.percent,
        "weights_version": plan.weights_version,
        "candidate_jobs": jobs,
        "base_jobs": _finished(rows, BASE_VARIANT, step_began),
        "exposure_start": exposed.isoformat(),
        "minutes": round(minutes, 2),
        "min_jobs": plan.min_jobs,
        "min_minutes": plan.min_minutes,
        "margin": plan.margin,
    }
    if verdict is None:
        holds.append(f"no verdict yet for {plan.variant}")
    else:
        breaches = [c.rule for c in verdict.guardrails if c.breached]
        stats.update(
            metric=verdict.metric,
            exposure_candidate_jobs=verdict.n_variant,
            exposure_base_jobs=verdict.n_base,
            method=verdict.method,
            estimate=verdict.estimate,
            ci_low=verdict.ci_low,
            ci_high=verdict.ci_high,
            p=verdict.p,
            alpha=verdict.alpha,
            decision=verdict.decision,
            guardrails_ok=verdict.guardrails_ok,
            breaches=breaches,
            guardrails=[asdict(c) for c in verdict.guardrails],
        )
        if breaches:
            holds.append("guardrail breached: " + ", ".join(breaches))
        if verdict.ci_low is None or not math.isfinite(verdict.ci_low):
            holds.append(_silence(verdict))
        elif verdict.ci_low < -plan.margin:
            holds.append(
                f"{verdict.metric} interval [{verdict.ci_low:.2f}, {verdict.ci_high:.2f}] "
                f"reaches below -{plan.margin:g}"
            )
    return Gate(not holds, tuple(holds), stats)
