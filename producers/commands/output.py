"""What every subcommand shares: exit codes, the client, JSON and one-line job output."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jobs.contracts import Status
from producers.commands.exits import EXIT_FAILED, EXIT_TIMEOUT, EXIT_USAGE
from producers.commands.progress import ProgressBar
from producers.views import job_to_dict

if TYPE_CHECKING:
    from producers.client import Client
    from producers.services import Services
    from store.models import Job
    from store.reading import Reader

__all__ = [
    "EXIT_FAILED", "EXIT_TIMEOUT", "EXIT_USAGE", "Subparsers", "client", "emit_json", "reader",
]  # fmt: skip
Subparsers = Any  # argparse's _SubParsersAction is private; its type adds nothing here


def services() -> Services:
    """The command's collaborators, built once; `with services() as s:` closes them."""
    from jobs.settings import get_settings
    from producers.services import Services

    return Services(get_settings())


def client() -> Client:
    # Imported when a command needs one: `advisor --help` never pays for it.
    from jobs.settings import get_settings
    from producers.client import Client

    return Client(get_settings())


def reader() -> Reader:
    """Job reads straight from the database, for commands that need nothing else."""
    from jobs.settings import get_settings
    from store.db import engine_for
    from store.reading import Reader

    return Reader(engine_for(get_settings().resolved_database_url))


def emit_json(data: Any) -> None:
    print(json.dumps(data, sort_keys=True, default=str))


def summary(job: Job) -> str:
    line = f"{job.id} {job.status} {job.advisor} -> {job.variant}"
    line += f" ({job.assignment}, {job.model_used})"
    if job.status == Status.SUCCEEDED and job.llm_outputs:
        line += f" overall_score={job.llm_outputs.get('overall_score')}"
    if job.status == Status.FAILED:
        line += f" {job.error_kind}: {job.error}"
    elif job.status == Status.CANCELLED:
        line += f" ({job.error})"
    elif job.publish_error and job.status == Status.QUEUED:
        line += f" (not yet published: {job.publish_error})"
    return line


def print_job(job: Job, as_json: bool) -> None:
    if as_json:
        emit_json(job_to_dict(job))
    else:
        print(summary(job))


def wait_with_bar(client: Client, job_id: str, timeout: float) -> Job:
    """Block on the job, drawing its token progress on stderr."""
    settings = client.settings
    bar = ProgressBar(settings.max_output_tokens)
    try:
        return client.wait(job_id, timeout, on_update=bar.update)
    finally:
        bar.finish()
