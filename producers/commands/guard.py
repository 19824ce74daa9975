"""`advisor guard`: judge non-base variants every interval and roll back a breaching one."""

from __future__ import annotations

import argparse
import json

from producers.commands.arguments import positive
from producers.commands.output import Subparsers, services
from producers.ops.guard import GuardDecision, GuardThresholds, enforce, run_loop


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

    built = services()
    engine, rollouts, registry = built.engine, built.rollouts, built.registry
    # The first round runs here so a bad database fails the command instead of the loop.
    show(enforce(engine, rollouts, registry, thresholds=thresholds))
    if not args.once:
        try:
            run_loop(engine, rollouts, registry, interval=args.interval, thresholds=thresholds,
                     on_round=show, delay_first=True)  # fmt: skip
        except KeyboardInterrupt:
            return 0
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("guard", help="roll a breaching variant back to weight 0")
    p.add_argument("--once", action="store_true", help="one evaluation, then exit")
    p.add_argument("--interval", type=positive, default=60.0, help="seconds between rounds")
    p.add_argument("--window-hours", type=positive, default=GuardThresholds.window_hours)
    p.add_argument("--json", action="store_true", help="one JSON line per round")
    p.set_defaults(handler=cmd_guard)
