"""`advisor deliveries JOB_ID | retry [JOB_ID...]`: a job's outcome notices, and resending them."""

from __future__ import annotations

import argparse

from producers.client import Client
from producers.commands.output import Subparsers, client, emit_json, services
from producers.errors import UsageError
from producers.views import delivery_target, delivery_to_dict
from store.models import Delivery


def _line(delivery: Delivery) -> str:
    log = delivery.log or []
    line = f"{delivery.id} {delivery.kind} {delivery_target(delivery)} {delivery.state}"
    line += f" after {len(log)} attempt(s)"
    if delivery.next_attempt_at is not None and delivery.state == "pending":
        line += f", next at {delivery.next_attempt_at:%H:%M:%S}"
    return line + (f": {delivery.last_error}" if delivery.last_error else "")


def cmd_deliveries(args: argparse.Namespace) -> int:
    first, *rest = args.what
    if first == "retry":
        return _retry(rest, args.json)
    if rest:
        raise UsageError("give one JOB_ID, or `retry [JOB_ID...]` (see --help)")
    with client() as producer:
        deliveries = producer.deliveries_of(producer.job_id(first))
    if args.json:
        emit_json([delivery_to_dict(d, operator=True) for d in deliveries])
        return 0
    if not deliveries:
        print(f"Job {first} asked for no notices")
    for delivery in deliveries:
        print(_line(delivery))
        for attempt in delivery.log or []:
            outcome = "ok" if attempt.get("ok") else attempt.get("detail") or attempt.get("error")
            code = attempt.get("status_code")
            print(f"  {attempt.get('at')} by {attempt.get('by')}: "
                  f"{outcome}{f' (HTTP {code})' if code else ''}")  # fmt: skip
    return 0


def _retry(job_ids: list[str], as_json: bool) -> int:
    with services() as built:
        producer = Client(services=built)
        # Full ids for prefixes; JobNotFound names a mistyped or unknown one.
        job_ids = [producer.status(producer.job_id(job_id)).id for job_id in job_ids]
        reset = producer.retry_deliveries(job_ids or None)
        done = built.courier.deliver_due() if reset else None
    summary = {
        "reset": len(reset),
        "delivered": len(done.delivered) if done else 0,
        "retrying": len(done.retrying) if done else 0,
        "undelivered": len(done.undelivered) if done else 0,
    }
    if as_json:
        emit_json(summary)
    else:
        print(f"Resending {summary['reset']} undelivered notice(s): delivered "
              f"{summary['delivered']}, will retry {summary['retrying']}, undelivered again "
              f"{summary['undelivered']}")  # fmt: skip
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "deliveries",
        help="a job's outcome notices (tasks, webhooks); `deliveries retry` resends undelivered",
        description="`advisor deliveries JOB_ID` lists a job's notices and every attempt; "
        "`advisor deliveries retry [JOB_ID...]` resends the undelivered ones (of those jobs, "
        "or all) at once, with a fresh set of attempts.",
    )
    p.add_argument("what", nargs="+", metavar="JOB_ID | retry [JOB_ID...]")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_deliveries)
