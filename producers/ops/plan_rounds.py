"""The guard round of rollout plans: each active plan's gate (producers/ops/plan_gate.py)
is checked and the plan advanced, held, or ended when its weights moved under it.

Every step is a `plan-step` rollout event over the weights version the plan last applied,
and the plan's row is written only over the step it was read at (compare-and-sets), so two
guards never advance a plan twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from jobs.clock import utcnow
from jobs.errors import StaleVersion
from jobs.variants import Registry
from producers.ops.capacity import plan_capacity
from producers.ops.plan_gate import Gate, check_gate, step_weights
from producers.plans import Plan, PlanStatus, PlanStore
from producers.rollouts import RolloutStore, Weights

logger = logging.getLogger(__name__)

STEP_KIND = "plan-step"
PLAN_ACTOR = "guard"
CAPACITY_WINDOW_HOURS = 24.0  # arrivals the workers per queue are planned on

# Called with the plan as it stands after a step (or its end) and the workers each queue needs.
Hook = Callable[[Plan, dict[str, int]], object]


def workers_needed(engine: Engine, registry: Registry, rollouts: RolloutStore) -> dict[str, int]:
    """Worker processes each variant's queue needs for the split as it is now."""
    capacity = plan_capacity(engine, registry, rollouts, window_hours=CAPACITY_WINDOW_HOURS)
    return {v.variant: v.workers for v in capacity.variants}


class PlanRounds:
    """Steps plans in guard rounds; `PlanControl` adds what operators do with them."""

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
