"""`advisor submit | status | wait | cancel | republish`: jobs in, watched, stopped, recovered."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.contracts import Status
from jobs.errors import InvalidImage
from producers.commands.output import (
    EXIT_FAILED,
    Subparsers,
    client,
    emit_json,
    print_job,
    reader,
    services,
    wait_with_bar,
)
from producers.errors import InvalidSubmission, PublishFailed
from producers.views import job_to_dict

if TYPE_CHECKING:
    from jobs.settings import Settings
    from producers.client import JobHandle
    from producers.inputs import ImageInput

logger = logging.getLogger(__name__)


def image_arg(text: str, settings: Settings) -> ImageInput:
    """'-' is stdin; a path under ADVISOR_IMAGE_ROOTS goes through the roots' checks, others
    are read here (either way the photo is stored with the job)."""
    if text == "-":
        return sys.stdin.buffer.read(settings.max_image_bytes + 1)
    path = Path(text).expanduser().resolve()
    if any(path.is_relative_to(root.resolve()) for root in settings.image_roots):
        return path
    # This user can read the file anyway; workers elsewhere cannot, so its bytes travel.
    if not path.is_file():
        where = "a directory" if path.is_dir() else "no such file"
        raise InvalidImage(
            f"Image {text!r} not found ({where}: {path}); give the path of a photo file, "
            "relative to this directory or absolute, or '-' to read it from stdin"
        )
    if path.stat().st_size > settings.max_image_bytes:
        raise InvalidImage(f"Image {text!r} exceeds the {settings.max_image_bytes}-byte limit")
    return path.read_bytes()


def cmd_submit(args: argparse.Namespace) -> int:
    if args.idempotency_key and len(args.images) > 1:
        raise InvalidSubmission("--idempotency-key names one job; submit one image with it")
    with client() as producer:
        items = [
            {"image": image_arg(text, producer.settings), "advisor": args.advisor,
             "subject": args.subject, "variant": args.variant,
             "idempotency_key": args.idempotency_key, "notify": args.notify,
             "notify_queue": args.notify_queue, "callback_url": args.callback_url}
            for text in args.images
        ]  # fmt: skip
        handles = producer.submit_many(items)
        for handle in handles:
            if not handle.published:
                print(f"advisor: warning: {handle.id} is queued but not published "
                      f"({handle.publish_error}); `advisor republish` sends it",
                      file=sys.stderr)  # fmt: skip
        if not args.wait:
            for handle in handles:
                _print_handle(handle, args.json)
            return 0
        jobs = [wait_with_bar(producer, h.id, args.timeout) for h in handles]
    for job in jobs:
        print_job(job, args.json)
    return 0 if all(j.status == Status.SUCCEEDED for j in jobs) else EXIT_FAILED


def _print_handle(handle: JobHandle, as_json: bool) -> None:
    if as_json:
        emit_json(job_to_dict(handle.status()))
        return
    note = "" if handle.created else " (existing job for this idempotency key)"
    print(f"{handle.id} {handle.advisor} -> {handle.variant} ({handle.assignment}, "
          f"weights v{handle.weights_version}){note}")  # fmt: skip


def cmd_status(args: argparse.Namespace) -> int:
    # The database alone: no broker, photo intake or router to load for one read.
    jobs = reader()
    try:
        job = jobs.get(jobs.resolve_id(args.job_id))
    finally:
        jobs.engine.dispose()
    print_job(job, args.json)
    if not args.json and job.photo:
        print(f"photo: {json.dumps(job.photo)}")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    with client() as producer:
        job = wait_with_bar(producer, producer.job_id(args.job_id), args.timeout)
    print_job(job, args.json)
    return 0 if job.status == Status.SUCCEEDED else EXIT_FAILED


def cmd_cancel(args: argparse.Namespace) -> int:
    with client() as producer:
        job = producer.cancel(producer.job_id(args.job_id))
        if job.status == Status.RUNNING and not args.json:
            print(f"{job.id} running: cancel requested; its worker stops it within about a second",
                  file=sys.stderr)  # fmt: skip
        if args.wait and job.status == Status.RUNNING:
            job = producer.wait(job.id, args.timeout)
    print_job(job, args.json)
    return 0


def cmd_republish(args: argparse.Namespace) -> int:
    with services() as built:
        if args.loop is None:
            count = built.outbox.republish(args.limit)
            if args.json:
                emit_json({"republished": count})
            else:
                print(f"Republished {count} job(s)")
            return 0
        logger.info("Republishing every %gs; Ctrl-C stops", args.loop)
        while True:
            try:
                built.outbox.republish(args.limit)
            except PublishFailed as exc:
                # The sweep outlives broker outages; the next round tries again.
                logger.warning("%s", exc)
            time.sleep(args.loop)


def register(sub: Subparsers) -> None:
    p = sub.add_parser("submit", help="submit photos for analysis")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file, or - for stdin")
    p.add_argument("--advisor", required=True, help="advisor persona, e.g. ansel")
    p.add_argument("--subject", help="sticky routing key (default: the image's sha256)")
    p.add_argument("--variant", help="force a variant, bypassing the split")
    p.add_argument("--idempotency-key", help="resubmitting with it returns the same job")
    p.add_argument("--notify", metavar="TASK", help="Celery task to send the outcome to")
    p.add_argument(
        "--notify-queue", metavar="QUEUE", help="the queue for --notify: advisor.notify.NAME"
    )
    p.add_argument("--callback-url", metavar="URL", help="POST the signed outcome here")
    p.add_argument("--wait", action="store_true", help="wait, with a progress bar on stderr")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to --wait")
    p.add_argument("--json", action="store_true", help="print each job as a JSON line")
    p.set_defaults(handler=cmd_submit)

    p = sub.add_parser("status", help="show a job")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("wait", help="wait for a job, with a progress bar on stderr")
    p.add_argument("job_id")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_wait)

    p = sub.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job_id")
    p.add_argument("--wait", action="store_true", help="wait until a running job has stopped")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to --wait")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("republish", help="send queued jobs whose publish failed")
    p.add_argument("--loop", type=float, metavar="SECONDS", help="sweep every SECONDS")
    p.add_argument("--limit", type=int, default=500, help="jobs per sweep")
    p.add_argument("--json", action="store_true", help="the count as JSON (without --loop)")
    p.set_defaults(handler=cmd_republish)
