"""`advisor sweep`: recover dead workers' jobs, lost or unpublished messages, due notices."""

from __future__ import annotations

import argparse
import json

from producers.commands.arguments import positive
from producers.commands.output import EXIT_FAILED, Subparsers, services
from producers.ops.sweep import Sweeper, SweepReport
from producers.services import Services


def sweeper(services: Services) -> Sweeper:
    """The sweep over the database and broker of `services`."""
    return Sweeper(
        services.settings, services.repository, services.outbox, services.broker,
        services.courier,
    )  # fmt: skip


def cmd_sweep(args: argparse.Namespace) -> int:
    def show(report: SweepReport) -> None:
        print(json.dumps(report.to_dict()) if args.json else report.summary(), flush=True)

    with services() as built:
        sweep = sweeper(built)
        # The first round runs here so a bad database fails the command instead of the loop.
        first = sweep.sweep(limit=args.limit)
        if args.loop is None:
            show(sweep.finish_notices(first, built.courier.lease_seconds))
            return EXIT_FAILED if first.publish_error else 0
        show(first)
        try:
            sweep.run_loop(interval=args.loop, limit=args.limit, on_round=show, delay_first=True)
        except KeyboardInterrupt:
            return 0
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "sweep", help="re-queue jobs of dead workers, resend lost and unpublished jobs"
    )
    p.add_argument("--loop", type=positive, metavar="SECONDS", help="sweep every SECONDS")
    p.add_argument("--limit", type=int, default=500, help="jobs per step of a round")
    p.add_argument("--json", action="store_true", help="one JSON line per round")
    p.set_defaults(handler=cmd_sweep)
