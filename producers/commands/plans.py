"""`advisor rollout plan ADVISOR VARIANT --steps ...` and `rollout plan show|pause|resume|abort`."""

from __future__ import annotations

import argparse

from producers.commands.output import Subparsers, emit_json, services
from producers.errors import InvalidPlan
from producers.ops.plan_gate import (
    DEFAULT_MARGIN,
    DEFAULT_MIN_JOBS,
    DEFAULT_MIN_MINUTES,
    parse_steps,
)
from producers.ops.plan_hook import PlanHook, hook_for
from producers.ops.plans import PlanControl
from producers.ops.rollout import default_actor
from producers.plans import Plan, PlanStore
from producers.services import Services

ACTIONS = ("show", "pause", "resume", "abort")
USAGE = (
    "advisor rollout plan ADVISOR VARIANT --steps 5,25,50,100 --reason R, "
    "or advisor rollout plan show|pause|resume|abort ADVISOR"
)


def plan_control(built: Services, hook: PlanHook | None = None) -> PlanControl:
    """Plans over `built`'s database and registry; its router forgets cached weights."""
    return PlanControl(
        built.engine, built.registry, built.rollouts, PlanStore(built.engine),
        on_weights=built.router.invalidate, hook=hook,
    )  # fmt: skip


def describe(plan: Plan) -> list[str]:
    """The plan in a few lines: where it stands, why, and the workers its split needs."""
    steps = " -> ".join(
        f"[{s:g}%]" if i == plan.step else f"{s:g}%" for i, s in enumerate(plan.steps)
    )
    lines = [
        f"{plan.advisor}/{plan.variant} plan #{plan.id} {plan.status.value}: {steps}",
        f"  {plan.state}",
        f"  gates: >= {plan.min_jobs} jobs and {plan.min_minutes:g} min per step, guardrails "
        f"ok, primary metric interval low >= -{plan.margin:g}",
    ]
    check = plan.details.get("last_check")
    if check and check.get("metric"):
        low, high = check.get("ci_low"), check.get("ci_high")
        interval = "-" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"
        lines.append(
            f"  last check: {check['candidate_jobs']} {plan.variant} / {check['base_jobs']} "
            f"base jobs, {check['minutes']:g} min, {check['metric']} {interval}, "
            f"guardrails {'ok' if check.get('guardrails_ok') else 'BREACHED'}"
        )
    workers = plan.details.get("workers")
    if workers:
        lines.append(
            "  workers needed: " + ", ".join(f"{v}={n}" for v, n in sorted(workers.items()))
        )
    lines.append(f"  started by {plan.created_by}: {plan.reason}")
    return lines


def emit(plan: Plan, as_json: bool) -> None:
    if as_json:
        emit_json(plan.to_dict())
    else:
        print("\n".join(describe(plan)))


def cmd_plan(args: argparse.Namespace) -> int:
    words = args.words
    actor = default_actor()
    with services() as built:
        hook = hook_for(built.settings)
        plans = plan_control(built, hook)
        if len(words) == 2 and words[0] in ACTIONS:
            action, advisor = words
            if action == "show":
                plan = plans.show(advisor)
            elif action == "pause":
                plan = plans.pause(advisor, reason=args.reason or "paused by operator",
                                   actor=actor)  # fmt: skip
            elif action == "resume":
                plan = plans.resume(advisor, reason=args.reason or "resumed by operator",
                                    actor=actor)  # fmt: skip
            else:
                if not args.reason:
                    raise InvalidPlan("Aborting a plan needs --reason")
                plan = plans.abort(advisor, reason=args.reason, actor=actor)
        elif len(words) == 2:
            if not args.steps or not args.reason:
                raise InvalidPlan(f"A new plan needs --steps and --reason: {USAGE}")
            advisor, variant = words
            plan = plans.create(
                advisor, variant, parse_steps(args.steps), reason=args.reason, actor=actor,
                min_jobs=args.min_jobs, min_minutes=args.min_minutes, margin=args.margin,
            )  # fmt: skip
        else:
            raise InvalidPlan(f"Expected two words: {USAGE}")
    emit(plan, args.json)
    if hook is not None:
        hook.wait()  # this process is about to exit; the hook's resize must not be cut off
    return 0


def register(r_sub: Subparsers) -> None:
    """`plan` under `advisor rollout`."""
    p = r_sub.add_parser(
        "plan", help="a step plan the guard moves forward by itself", description=USAGE
    )
    p.add_argument("words", nargs="+", metavar="ADVISOR VARIANT | ACTION ADVISOR")
    p.add_argument("--steps", metavar="P,P,...", help="the candidate's percentages, increasing")
    p.add_argument("--min-jobs", type=int, default=DEFAULT_MIN_JOBS, metavar="N",
                   help="finished candidate jobs per step before it may advance")  # fmt: skip
    p.add_argument("--min-minutes", type=float, default=DEFAULT_MIN_MINUTES, metavar="M",
                   help="minutes per step before it may advance")  # fmt: skip
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN, metavar="X",
                   help="how far below base the primary metric may be (its units)")  # fmt: skip
    p.add_argument("--reason", help="required to create or abort a plan")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_plan)
