"""What every subcommand shares: exit codes, the client, JSON and one-line job output."""

from __future__ import annotations

import json
from typing import Any

from jobs.contracts import Status
from jobs.settings import get_settings
from producers.client import Client
from producers.commands.progress import ProgressBar
from producers.services import Services
from producers.views import job_to_dict
from store.models import Job

EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 1, 2, 3
Subparsers = Any  # argparse's _SubParsersAction is private; its type adds nothing here


def services() -> Services:
    """The command's collaborators, built once; `with services() as s:` closes them."""
    return Services(get_settings())


def client() -> Client:
    return Client(get_settings())


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
