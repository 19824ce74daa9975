"""Rollout plans: create, pause, resume and abort them, and the guard round that steps them.

A plan is a list of the candidate's percentages. The guard loop advances it one step when
the candidate has `min_jobs` finished split jobs and `min_minutes` have passed since the step
began, every guardrail holds, and the primary metric's always-valid interval (candidate -
base) has its low end at or above `-margin` (non-inferiority). The guardrails and the metric
are read over the candidate's exposure sequence (producers/ops/exposure.py), the one the
guard judges, so guard, plan and dashboard give one answer. Every step is a `plan-step`
rollout event carrying the statistics it was taken on; both writes are compare-and-sets, so
two guards never advance a plan twice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from jobs.advisors import get_persona
from jobs.clock import as_utc, utcnow
from jobs.contracts import BASE_VARIANT
from jobs.errors import StaleVersion
from jobs.settings import Settings
from jobs.variants import Registry
from producers.errors import InvalidPlan, PlanConflict, PlanNotFound
from producers.ops.capacity import plan_capacity
from producers.ops.evidence import finished_since
from producers.ops.exposure import state_at, weight_changes
from producers.ops.guardrails import judged
from producers.ops.plan_hook import hook_for
from producers.ops.report_rows import JobRow
from producers.ops.sequential import MIN_PER_ARM
from producers.ops.stats import NOT_ENOUGH_DATA
from producers.ops.verdicts import UNPAIRED_METRIC, Verdict, verdicts
from producers.plans import Plan, PlanStatus, PlanStore
from producers.rollouts import RolloutStore, Weights

logger = logging.getLogger(__name__)

STEP_KIND = "plan-step"
ABORT_KIND = "plan-abort"
PLAN_ACTOR = "guard"
DEFAULT_MIN_JOBS = 30
DEFAULT_MIN_MINUTES = 30.0
DEFAULT_MARGIN = 0.5  # points on the primary metric's scale (rating 1-5, overall_score 1-10)
CAPACITY_WINDOW_HOURS = 24.0  # arrivals the workers per queue are planned on

# Called with the plan as it stands after a step (or its end) and the workers each queue needs.
Hook = Callable[[Plan, dict[str, int]], object]


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


def workers_needed(engine: Engine, registry: Registry, rollouts: RolloutStore) -> dict[str, int]:
    """Worker processes each variant's queue needs for the split as it is now."""
    capacity = plan_capacity(engine, registry, rollouts, window_hours=CAPACITY_WINDOW_HOURS)
    return {v.variant: v.workers for v in capacity.variants}


class PlanControl:
    """What operators do with plans (CLI and HTTP); the guard round is `step_plans`."""

    def __init__(
        self,
        engine: Engine,
        registry: Registry,
        rollouts: RolloutStore,
        plans: PlanStore,
        *,
        on_weights: Callable[[], None] | None = None,
        hook: Hook | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.rollouts = rollouts
        self.plans = plans
        self.on_weights = on_weights or (lambda: None)  # e.g. the router forgets its cache
        self.hook = hook

    def show(self, advisor: str) -> Plan:
        get_persona(advisor)
        plan = self.plans.latest(advisor)
        if plan is None:
            raise PlanNotFound(
                f"{advisor} has no rollout plan; start one with "
                f"`advisor rollout plan {advisor} VARIANT --steps 5,25,50,100`"
            )
        return plan

    def _open(self, advisor: str) -> Plan:
        get_persona(advisor)
        plan = self.plans.open(advisor)
        if plan is None:
            raise PlanNotFound(f"{advisor} has no active or paused rollout plan")
        return plan

    def create(
        self,
        advisor: str,
        variant: str,
        steps: Sequence[float],
        *,
        reason: str,
        actor: str,
        min_jobs: int = DEFAULT_MIN_JOBS,
        min_minutes: float = DEFAULT_MIN_MINUTES,
        margin: float = DEFAULT_MARGIN,
    ) -> Plan:
        """Store the plan and apply its first step as a rollout event."""
        get_persona(advisor)
        serving = {v.name for v in self.registry.variants_for(advisor)}
        if variant == BASE_VARIANT or variant not in serving:
            raise InvalidPlan(
                f"Unknown candidate {variant!r} for {advisor}; known: "
                f"{sorted(serving - {BASE_VARIANT})} ({self.registry.where})"
            )
        steps = check_steps(steps)
        if min_jobs < 1 or not math.isfinite(min_minutes) or min_minutes < 0:
            raise InvalidPlan("--min-jobs must be >= 1 and --min-minutes >= 0")
        if not math.isfinite(margin) or margin < 0:
            raise InvalidPlan(f"--margin must be a finite number >= 0, got {margin}")
        if not reason.strip():
            raise InvalidPlan("A reason is required for a rollout plan (--reason)")
        if self.plans.open(advisor) is not None:
            raise self.plans._second(advisor)
        current = self.rollouts.get(advisor)
        # The row claims the advisor first; the weights follow over the version read here.
        plan = self.plans.create(
            advisor,
            variant,
            steps,
            min_jobs=min_jobs,
            min_minutes=min_minutes,
            margin=margin,
            weights_version=current.version,
            actor=actor,
            reason=reason,
            state=f"starting at {steps[0]:g}%",
        )
        try:
            weights = self._apply(plan, current, 0, actor, f"plan started: {reason}", {})
        except StaleVersion:
            self.plans.update(
                plan,
                status=PlanStatus.ABORTED,
                state="weights changed while the plan started; not applied",
            )
            raise
        started = self.plans.update(
            plan,
            weights_version=weights.version,
            step_started_at=weights.updated_at,
            state=f"at {steps[0]:g}%: waiting for evidence",
        )
        return self._after_step(started or self.plans.get(plan.id))

    def _apply(
        self,
        plan: Plan,
        current: Weights,
        step: int,
        actor: str,
        reason: str,
        statistics: dict[str, Any],
    ) -> Weights:
        """The step's weights as a `plan-step` event, only over the version `current` has."""
        percent = plan.steps[step]
        result = self.rollouts.set(
            plan.advisor,
            step_weights(current, plan.variant, percent),
            known_variants=self.registry.names | set(current.weights),
            actor=actor,
            reason=reason,
            kind=STEP_KIND,
            expected_version=current.version,
            details={
                "plan": plan.id,
                "step": step,
                "percent": percent,
                "variant": plan.variant,
                "statistics": statistics,
            },
        )
        self.on_weights()
        return result

    def _after_step(self, plan: Plan) -> Plan:
        """Record the workers each queue needs for the new split and run the hook."""
        try:
            workers = workers_needed(self.engine, self.registry, self.rollouts)
        except Exception:  # a capacity estimate must never stop a rollout step
            logger.exception("plan %s: could not compute the workers needed", plan.advisor)
            return plan
        noted = self.plans.update(plan, details={**plan.details, "workers": workers})
        plan = noted or self.plans.get(plan.id)
        if self.hook is not None:
            self.hook(plan, workers)
        return plan

    def pause(self, advisor: str, *, reason: str, actor: str) -> Plan:
        plan = self._open(advisor)
        if plan.status is PlanStatus.PAUSED:
            return plan
        return self._write(plan, status=PlanStatus.PAUSED, state=f"paused by {actor}: {reason}")

    def resume(self, advisor: str, *, reason: str, actor: str) -> Plan:
        """Active again; the current step's weights are applied anew, its jobs and minutes
        count again from now (the metric keeps reading the candidate's exposure).

        A pause may have let the weights move (a manual `rollout set`): the step's count
        includes only jobs finished at the weights it sets.
        """
        plan = self._open(advisor)
        if plan.status is PlanStatus.ACTIVE:
            return plan
        current = self.rollouts.get(advisor)
        weights = self._apply(
            plan, current, plan.step, actor, f"plan resumed at {plan.percent:g}%: {reason}", {}
        )
        resumed = self._write(
            plan,
            status=PlanStatus.ACTIVE,
            weights_version=weights.version,
            step_started_at=weights.updated_at,
            state=f"at {plan.percent:g}%: resumed by {actor}: {reason}",
        )
        return self._after_step(resumed)

    def abort(self, advisor: str, *, reason: str, actor: str) -> Plan:
        """The candidate to 0 (its share to base), like a rollback; the plan ends."""
        if not reason.strip():
            raise InvalidPlan("A reason is required to abort a plan (--reason)")
        plan = self._open(advisor)
        current = self.rollouts.get(advisor)
        weights = dict(current.weights)
        weights[BASE_VARIANT] = weights.get(BASE_VARIANT, 0.0) + weights.get(plan.variant, 0.0)
        weights[plan.variant] = 0.0
        self.rollouts.set(
            advisor,
            weights,
            known_variants=self.registry.names | set(current.weights),
            actor=actor,
            reason=f"plan aborted: {reason}",
            kind=ABORT_KIND,
            shadow=0.0,
            expected_version=current.version,
            details={"plan": plan.id, "step": plan.step},
        )
        self.on_weights()
        ended = self._write(
            plan,
            status=PlanStatus.ABORTED,
            state=f"aborted by {actor} at {plan.percent:g}%: {reason}",
        )
        return self._after_step(ended)

    def _write(self, plan: Plan, **values: Any) -> Plan:
        """An operator's change over `plan`; a guard's note in between (same status and step)
        is read again and written over, anything else is a conflict to look at first."""
        for _ in range(3):
            written = self.plans.update(plan, **values)
            if written is not None:
                return written
            fresh = self.plans.get(plan.id)
            if (fresh.status, fresh.step) != (plan.status, plan.step):
                break
            plan = fresh
        raise PlanConflict(
            f"The plan of {plan.advisor} changed meanwhile; read it again "
            f"(`advisor rollout plan show {plan.advisor}`) and retry"
        )

    def on_manual_change(self, weights: Weights, actor: str) -> Plan | None:
        """After an operator's `rollout set` or `rollback`: an active plan pauses and says so,
        or ends as rolled back if its candidate is now at 0 (None: no active plan)."""
        plan = self.plans.open(weights.advisor)
        if plan is None or plan.status is not PlanStatus.ACTIVE:
            return None
        by = f"{actor} at v{weights.version} ({weights.reason})"
        if weights.weights.get(plan.variant, 0.0) <= 0:
            ended = self.plans.update(
                plan,
                status=PlanStatus.ROLLED_BACK,
                state=f"rolled back at {plan.percent:g}%: weights set by {by}",
            )
            return self._after_step(ended) if ended is not None else None
        return self.plans.update(
            plan,
            status=PlanStatus.PAUSED,
            state=f"paused: weights set by {by}; "
            f"`advisor rollout plan resume {weights.advisor}` continues at {plan.percent:g}%",
        )

    def step_all(
        self,
        decisions: Sequence[Any] = (),
        *,
        advisors: Iterable[str] | None = None,
        now: datetime | None = None,
    ) -> list[Plan]:
        """One guard round over every active plan; returns the plans as they stand after it."""
        wanted = set(advisors) if advisors is not None else None
        out = []
        for plan in self.plans.all_open():
            if wanted is not None and plan.advisor not in wanted:
                continue
            if plan.status is PlanStatus.ACTIVE:
                plan = self._step(plan, decisions, now or utcnow())
            out.append(plan)
        return out

    def _step(self, plan: Plan, decisions: Sequence[Any], now: datetime) -> Plan:
        rolled = next(
            (
                d
                for d in decisions
                if d.advisor == plan.advisor
                and d.variant == plan.variant
                and d.action == "rollback"
                and d.applied
            ),
            None,
        )
        if rolled is not None:
            ended = self.plans.update(
                plan,
                status=PlanStatus.ROLLED_BACK,
                state=f"rolled back at {plan.percent:g}%: {rolled.reason}",
            )
            return self._after_step(ended) if ended is not None else self.plans.get(plan.id)
        current = self.rollouts.get(plan.advisor)
        if current.version != plan.weights_version:
            return self._drifted(plan, current)
        gate = check_gate(self.engine, plan, now)
        if not gate.passed:
            state = f"holding at {plan.percent:g}%: " + "; ".join(gate.holds)
            held = self.plans.update(
                plan, state=state, details={**plan.details, "last_check": gate.statistics}
            )
            return held or self.plans.get(plan.id)
        return self._advance(plan, current, gate)

    def _advance(self, plan: Plan, current: Weights, gate: Gate) -> Plan:
        nxt = plan.step + 1
        if nxt >= len(plan.steps):
            done = self.plans.update(
                plan,
                status=PlanStatus.COMPLETED,
                state=f"completed at {plan.percent:g}%",
                details={**plan.details, "last_check": gate.statistics},
            )
            return done or self.plans.get(plan.id)
        s = gate.statistics
        why = (
            f"plan step {plan.percent:g}% -> {plan.steps[nxt]:g}%: {s['candidate_jobs']} "
            f"jobs over {s['minutes']:g} min, guardrails ok, {s.get('metric')} "
            f"[{s.get('ci_low'):.2f}, {s.get('ci_high'):.2f}] >= -{plan.margin:g}"
        )
        try:
            weights = self._apply(plan, current, nxt, PLAN_ACTOR, why, gate.statistics)
        except StaleVersion as exc:
            # Another guard stepped it, or an operator changed the weights: next round knows.
            logger.info(
                "plan %s: weights moved meanwhile (v%d); judged next round",
                plan.advisor,
                exc.current,
            )
            return self.plans.get(plan.id)
        last = nxt == len(plan.steps) - 1
        state = (
            f"completed at {plan.steps[nxt]:g}%"
            if last
            else f"at {plan.steps[nxt]:g}%: waiting for evidence"
        )
        values: dict[str, Any] = dict(
            step=nxt,
            weights_version=weights.version,
            step_started_at=weights.updated_at,
            state=state,
            details={**plan.details, "last_check": gate.statistics},
        )
        if last:
            values["status"] = PlanStatus.COMPLETED
        stepped = self.plans.update(plan, match_step=True, **values)
        logger.info("plan %s: %s", plan.advisor, why)
        return self._after_step(stepped or self.plans.get(plan.id))

    def _drifted(self, plan: Plan, current: Weights) -> Plan:
        """The weights moved since the step: this plan's own step in flight, a rollback, or
        an operator's change (which pauses the plan)."""
        newer = [
            e
            for e in self.rollouts.history(plan.advisor, limit=20)
            if e.version > plan.weights_version
        ]
        if any(e.kind == STEP_KIND and (e.details or {}).get("plan") == plan.id for e in newer):
            return plan  # another guard's step of this plan, its plan row not yet written
        latest = newer[0] if newer else None
        if current.weights.get(plan.variant, 0.0) <= 0:
            who = f"{latest.actor} ({latest.kind}): {latest.reason}" if latest else "unknown"
            ended = self.plans.update(
                plan,
                status=PlanStatus.ROLLED_BACK,
                state=f"rolled back at {plan.percent:g}% by {who}",
            )
            return self._after_step(ended) if ended is not None else self.plans.get(plan.id)
        by = f"{latest.actor} at v{latest.version} ({latest.reason})" if latest else "someone"
        paused = self.plans.update(
            plan,
            status=PlanStatus.PAUSED,
            state=f"paused: weights set by {by}; `advisor rollout plan resume "
            f"{plan.advisor}` continues at {plan.percent:g}%",
        )
        return paused or self.plans.get(plan.id)


def plan_control_for(
    settings: Settings, engine: Engine, registry: Registry, rollouts: RolloutStore
) -> PlanControl:
    """The guard's plan control: ADVISOR_PLAN_HOOK, when set, runs after each step."""
    return PlanControl(engine, registry, rollouts, PlanStore(engine), hook=hook_for(settings))
