"""`advisor guard`: judge non-base variants every interval and roll back a breaching one;
`advisor guard replay`: the same rules over recorded jobs, round by round, writing nothing."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

from jobs.advisors import get_persona
from jobs.clock import utcnow
from producers.commands.arguments import at_most, positive
from producers.commands.output import Subparsers, services
from producers.errors import UsageError
from producers.ops.guard import GuardDecision, GuardThresholds, enforce, run_loop
from producers.ops.plan_hook import PlanHook
from producers.ops.plans import plan_control_for
from producers.ops.replay import ReplayRound, replay


def cmd_guard(args: argparse.Namespace) -> int:
    thresholds = GuardThresholds(window_hours=args.window_hours)

    def show(decisions: list[GuardDecision]) -> None:
        if args.json:
            print(json.dumps([d.to_dict() for d in decisions]), flush=True)
            return
        for d in decisions:
            applied = " (rolled back)" if d.applied else ""
            print(f"{d.advisor}/{d.variant}: {d.action}{applied}: {d.reason}", flush=True)
        if not decisions:
            print("no non-base variant to judge", flush=True)
        for plan in plans.plans.all_open():
            print(f"plan {plan.advisor}/{plan.variant} {plan.status.value}: {plan.state}",
                  flush=True)  # fmt: skip

    built = services()
    settings, engine = built.settings, built.engine
    rollouts, registry = built.rollouts, built.registry
    plans = plan_control_for(settings, engine, registry, rollouts)
    # The first round runs here so a bad database fails the command instead of the loop.
    show(enforce(engine, rollouts, registry, thresholds=thresholds, plans=plans))
    if not args.once:
        try:
            run_loop(engine, rollouts, registry, interval=args.interval, thresholds=thresholds,
                     on_round=show, delay_first=True, plans=plans)  # fmt: skip
        except KeyboardInterrupt:
            return 0
    if isinstance(plans.hook, PlanHook):
        plans.hook.wait()  # --once exits now; a hook it started must not be cut off
    return 0


YEAR_HOURS = 24 * 366
# A replay reads every round's jobs again: a week at the default 60 minutes is 168 rounds.
MAX_REPLAY_ROUNDS = 100_000


def moment(text: str) -> datetime:
    """An argparse type: an ISO 8601 time, UTC unless it names its offset."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO time such as 2026-12-01T08:00, got {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _replay_line(r: ReplayRound) -> str:
    interval = f"[{_num(r.ci_low, '.3g')}, {_num(r.ci_high, '.3g')}]"
    return (
        f"{r.at:%Y-%m-%d %H:%M}  {r.variant:<14}{r.action:<9}v{r.weights_version:<4}"
        f"w {r.weight:.2f}  {r.rule or '-'}: {_num(r.estimate, '.3g')} {interval} "
        f"p {_num(r.p, '.3g')}"
    )


def cmd_replay(args: argparse.Namespace) -> int:
    get_persona(args.advisor)  # an unknown advisor is refused, naming the known ones
    end = args.to or utcnow()
    start = args.start or end - timedelta(days=7)
    if start > end:
        raise UsageError(f"--from {start.isoformat()} is after --to {end.isoformat()}")
    rounds = (end - start).total_seconds() / 60 / args.every
    if rounds > MAX_REPLAY_ROUNDS:
        raise UsageError(
            f"{start.isoformat()} to {end.isoformat()} every {args.every:g} minutes is "
            f"{rounds:.0f} rounds; at most {MAX_REPLAY_ROUNDS}: narrow --from/--to or raise --every"
        )
    engine = services().engine
    thresholds = GuardThresholds(window_hours=args.window_hours)
    rounds = replay(engine, args.advisor, start=start, end=end,
                    every=timedelta(minutes=args.every), thresholds=thresholds)  # fmt: skip
    if args.json:
        print(json.dumps([r.to_dict() for r in rounds]))
        return 0
    for r in rounds:
        print(_replay_line(r))
    rollbacks = [r for r in rounds if r.action == "rollback"]
    print(f"{len(rounds)} decisions at {args.every:g}-minute rounds, {len(rollbacks)} rollback(s)"
          + (f", first at {rollbacks[0].at:%Y-%m-%d %H:%M}" if rollbacks else ""))  # fmt: skip
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("guard", help="roll a breaching variant back to weight 0")
    actions = p.add_subparsers(dest="guard_action")
    r = actions.add_parser(
        "replay",
        help="the guard's decisions at each past round over recorded jobs; writes nothing",
    )
    r.add_argument("--advisor", required=True)
    r.add_argument("--from", dest="start", type=moment, metavar="ISO",
                   help="first round (default: --to minus 7 days)")  # fmt: skip
    r.add_argument("--to", type=moment, metavar="ISO", help="last round (default: now)")
    r.add_argument("--every", type=at_most(YEAR_HOURS * 60), default=60.0, metavar="MINUTES",
                   help="minutes between rounds (default 60)")  # fmt: skip
    r.add_argument("--window-hours", type=at_most(YEAR_HOURS),
                   default=GuardThresholds.window_hours,
                   help="only for a variant with no recorded rollout")  # fmt: skip
    r.add_argument("--json", action="store_true", help="one JSON array of the rounds")
    r.set_defaults(handler=cmd_replay)
    p.add_argument("--once", action="store_true", help="one evaluation, then exit")
    p.add_argument("--interval", type=positive, default=60.0, help="seconds between rounds")
    p.add_argument(
        "--window-hours", type=at_most(YEAR_HOURS), default=GuardThresholds.window_hours,
        help="only for a variant with no recorded rollout: judge its last N hours",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON line per round")
    p.set_defaults(handler=cmd_guard)
