"""Rollout plans as operators drive them: create, show, pause, resume and abort.

A plan is a list of the candidate's percentages. The guard loop advances it one step when
its gate passes (producers/ops/plan_gate.py), in its round (producers/ops/plan_rounds.py).
Every write is a compare-and-set: an operator's change never overwrites a step in between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from jobs.advisors import get_persona
from jobs.contracts import BASE_VARIANT
from jobs.errors import StaleVersion
from jobs.settings import Settings
from jobs.variants import Registry
from producers.errors import InvalidPlan, PlanConflict, PlanNotFound
from producers.ops.plan_gate import (
    DEFAULT_MARGIN,
    DEFAULT_MIN_JOBS,
    DEFAULT_MIN_MINUTES,
    check_steps,
)
from producers.ops.plan_hook import hook_for
from producers.ops.plan_rounds import PlanRounds
from producers.plans import Plan, PlanStatus, PlanStore
from producers.rollouts import RolloutStore, Weights

ABORT_KIND = "plan-abort"


class PlanControl(PlanRounds):
    """What operators do with plans (CLI and HTTP); the guard round is `step_all`."""

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


def plan_control_for(
    settings: Settings, engine: Engine, registry: Registry, rollouts: RolloutStore
) -> PlanControl:
    """The guard's plan control: ADVISOR_PLAN_HOOK, when set, runs after each step."""
    return PlanControl(engine, registry, rollouts, PlanStore(engine), hook=hook_for(settings))
