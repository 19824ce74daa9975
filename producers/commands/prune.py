"""`advisor prune`: delete stored images (and optionally finished jobs) past their retention."""

from __future__ import annotations

import argparse
import json

from producers.commands.arguments import positive
from producers.commands.output import Subparsers, services
from producers.ops.prune import prune


def cmd_prune(args: argparse.Namespace) -> int:
    built = services()
    settings = built.settings
    report = prune(
        built.repository,
        older_than_days=args.older_than or settings.retention_days,
        jobs=args.jobs or settings.retention_prune_jobs,
    )
    print(json.dumps(report.to_dict()) if args.json else report.summary())
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "prune", help="delete stored images no queued or running job needs, past retention"
    )
    p.add_argument(
        "--older-than",
        type=positive,
        metavar="DAYS",
        help="age in days (default ADVISOR_RETENTION_DAYS, 30)",
    )
    p.add_argument(
        "--jobs",
        action="store_true",
        help="also delete succeeded and failed job rows completed before then",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_prune)  # fmt: skip
