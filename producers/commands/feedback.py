"""`advisor feedback JOB_ID --rating N`: the app user's verdict on a critique."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from producers.commands.output import Subparsers, client, emit_json
from producers.feedback import DEFAULT_SOURCE


def cmd_feedback(args: argparse.Namespace) -> int:
    with client() as producer:
        record = producer.feedback(
            producer.job_id(args.job_id), rating=args.rating, helpful=args.helpful,
            comment=args.comment, source=args.source,
        )  # fmt: skip
    if args.json:
        emit_json(asdict(record))
        return 0
    helpful = {True: "helpful", False: "not helpful", None: "helpfulness not given"}
    note = "; replaced the earlier feedback from this source" if record.replaced else ""
    print(f"Feedback on {record.job_id} from {record.source}: rating {record.rating}, "
          f"{helpful[record.helpful]}{note}")  # fmt: skip
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("feedback", help="record a user's rating of a job's critique")
    p.add_argument("job_id")
    p.add_argument("--rating", type=int, required=True, choices=range(1, 6), metavar="1-5")
    helpful = p.add_mutually_exclusive_group()
    helpful.add_argument("--helpful", dest="helpful", action="store_true", default=None)
    helpful.add_argument("--not-helpful", dest="helpful", action="store_false")
    p.add_argument("--comment", help="the user's words (at most 2000 characters)")
    p.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help=f"who rates (one rating per job and source; default {DEFAULT_SOURCE})",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_feedback)
