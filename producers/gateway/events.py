"""Following a job from the event loop: waiting for it, and its server-sent events."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from jobs.contracts import FINAL_STATUSES, Status
from jobs.incidents import incident
from producers.client import Client
from producers.gateway.limits import Lease
from producers.gateway.schemas import job_public
from store.models import Job

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25
# A comment line now and then keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0


def is_final(job: Job) -> bool:
    return Status(job.status) in FINAL_STATUSES


async def wait_for(
    client: Client,
    job_id: str,
    timeout: float,
    is_disconnected: Callable[[], Awaitable[bool]] | None = None,
) -> Job | None:
    """The job once final, or as it stands when `timeout` runs out; never blocks the loop.

    None once the client has gone (checked every poll): nobody is left to answer.
    """
    deadline = time.monotonic() + timeout
    while True:
        job = await run_in_threadpool(client.status, job_id)
        remaining = deadline - time.monotonic()
        if is_final(job) or remaining <= 0:
            return job
        await anyio.sleep(min(POLL_SECONDS, remaining))
        if is_disconnected is not None and await is_disconnected():
            logger.info("wait for %s: the client went away; polling stopped", job_id)
            return None


def sse(event: str, data: Any) -> str:
    """One server-sent event; `data` is JSON on a single line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def _brief(job: Job, max_output_tokens: int) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "variant": job.variant,
        "progress": job.progress or 0,
        "max_output_tokens": max_output_tokens,
    }


async def job_events(
    client: Client,
    job_id: str,
    max_output_tokens: int,
    *,
    lease: Lease | None = None,
    max_seconds: float = float("inf"),
) -> AsyncIterator[str]:
    """`status` on every status change, `progress` on every new token count while running,
    then one `final` event carrying the whole job; the stream ends there.

    After `max_seconds` an `expired` event ends it (the client may reconnect). A client that
    disconnects cancels this generator at its next poll; the stream's `lease` is given back
    either way.
    """
    try:
        async for event in _events(client, job_id, max_output_tokens, max_seconds):
            yield event
    finally:
        if lease is not None:
            lease.release()


async def _events(
    client: Client, job_id: str, max_output_tokens: int, max_seconds: float
) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    status: str | None = None
    progress: int | None = None
    started = quiet_since = time.monotonic()
    while True:
        if time.monotonic() - started >= max_seconds:
            message = f"This stream ended after {max_seconds:g}s; reconnect to follow the job"
            yield sse("expired", {"error": "stream_expired", "message": message})
            return
        try:
            job = await run_in_threadpool(client.status, job_id)
        except SQLAlchemyError as exc:
            found = incident(exc, f"events of job {job_id}", log=logger)
            message = f"{found.text}; reconnect in a moment to follow the job"
            yield sse("error", {"error": "database_unavailable", "message": message,
                                "reference": found.reference})  # fmt: skip
            return
        if is_final(job):
            deliveries = await run_in_threadpool(client.deliveries_of, job_id)
            public = job_public(job, max_output_tokens, deliveries)
            yield sse("final", public.model_dump(mode="json"))
            return
        sent = False
        if job.status != status:
            status = job.status
            yield sse("status", _brief(job, max_output_tokens))
            sent = True
        if job.status == Status.RUNNING and (job.progress or 0) != progress:
            progress = job.progress or 0
            if progress > 0:
                yield sse("progress", _brief(job, max_output_tokens))
                sent = True
        now = time.monotonic()
        if sent:
            quiet_since = now
        elif now - quiet_since >= KEEPALIVE_SECONDS:
            quiet_since = now
            yield ": keep-alive\n\n"
        await anyio.sleep(POLL_SECONDS)
