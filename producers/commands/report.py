"""`advisor report`: the A/B report over the jobs table, as text or JSON."""

from __future__ import annotations

import argparse
import json

from jobs.advisors import get_persona
from producers.commands.arguments import positive
from producers.commands.output import Subparsers, services
from producers.ops.report import build_report
from producers.ops.report_text import render_report


def cmd_report(args: argparse.Namespace) -> int:
    if args.advisor is not None:
        get_persona(args.advisor)  # UnknownAdvisor names the known ones
    report = build_report(services().engine, days=args.days, advisor=args.advisor)
    print(json.dumps(report.to_dict(), indent=2) if args.json else render_report(report))
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "report", help="A/B report: always-valid verdicts, outcomes, scores, SRM, score copy"
    )
    p.add_argument("--days", type=positive, default=7.0, help="window (default 7)")
    p.add_argument("--advisor", help="only this advisor's jobs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_report)
