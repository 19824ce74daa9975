"""Job endpoints: POST /analyze, GET and DELETE /jobs/{id} (+ /events), POST /jobs/{id}/feedback."""

from __future__ import annotations

import re
from contextlib import nullcontext
from functools import partial
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from jobs.contracts import Status
from jobs.errors import InvalidImage
from producers.client import JobHandle
from producers.gateway.auth import Caller, IntakeDep
from producers.gateway.errors import BrokerUnavailable, JobUnknown, RateLimited, VariantForbidden
from producers.gateway.events import is_final, job_events, wait_for
from producers.gateway.intake import read_submission
from producers.gateway.schemas import (
    MAX_WAIT_SECONDS,
    AnalyzeSubmission,
    FeedbackPublic,
    FeedbackSubmission,
    JobAccepted,
    JobPublic,
    SubmissionFields,
    error_responses,
    feedback_public,
    job_public,
    job_urls,
)
from producers.gateway.service import Gateway, GatewayDep
from store.models import Job

router = APIRouter(tags=["jobs"])

_JOB_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _multipart_schema() -> dict[str, Any]:
    fields = SubmissionFields.model_json_schema()
    properties = {
        "file": {"type": "string", "format": "binary", "description": "the image file"},
        "image": AnalyzeSubmission.model_json_schema()["properties"]["image"]["anyOf"][0]
        | {"description": "or: a path, as in the JSON body"},
        **fields["properties"],
    }
    return {"type": "object", "properties": properties, "required": fields.get("required", [])}


ANALYZE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": AnalyzeSubmission.model_json_schema()},
            "multipart/form-data": {"schema": _multipart_schema()},
        },
    }
}


def checked_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise JobUnknown(
            f"No job {job_id[:80]!r}: job ids are UUIDs such as those POST /analyze returns"
        )
    return job_id


def _accepted(handle: JobHandle) -> JobAccepted:
    status_url, events_url = job_urls(handle.id)
    return JobAccepted(
        job_id=handle.id, status="queued", advisor=handle.advisor, variant=handle.variant,
        assignment=handle.assignment.value, model_used=handle.model_used,
        weights_version=handle.weights_version, created=handle.created,
        status_url=status_url, events_url=events_url,
    )  # fmt: skip


@router.post(
    "/analyze",
    status_code=202,
    response_model=JobAccepted,
    summary="Submit a photo for critique",
    responses={
        200: {"model": JobPublic, "description": "succeeded or failed within `wait` seconds"},
        **error_responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
    },
    openapi_extra=ANALYZE_BODY,
)
async def analyze(
    gateway: GatewayDep,
    caller: IntakeDep,
    request: Request,
    response: Response,
    wait: float = Query(
        default=0,
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="seconds to wait for the analysis; 200 with it if it finished in time",
    ),  # fmt: skip
) -> Any:
    """A JSON body (`image` path or `image_base64`) or a multipart upload (`file`)."""
    # The wait slot is taken first: a 503 too_busy then means nothing was submitted.
    with gateway.waits.take() if wait > 0 else nullcontext():
        handle = await _submit(gateway, caller, request)
        accepted = _accepted(handle)
        if wait > 0:
            job = await wait_for(gateway.client, handle.id, wait, request.is_disconnected)
            if job is None:
                return Response(status_code=204)  # the client left; nobody reads this
            if is_final(job):
                public = await run_in_threadpool(_public, gateway, job)
                return JSONResponse(jsonable_encoder(public), status_code=200)
            accepted.status = job.status
        elif not handle.created:
            # An earlier submit with this key made the job; it may be further along.
            accepted.status = (await run_in_threadpool(gateway.client.status, handle.id)).status
    response.headers["Location"] = accepted.status_url
    return accepted


async def _submit(gateway: Gateway, caller: Caller, request: Request) -> JobHandle:
    """Rate limit, body, variant rule, quota; the stored and published job."""
    settings = gateway.settings
    quota: int | None = None
    if caller.key is not None:
        rate = caller.key.rate_per_minute or settings.key_rate_per_minute
        pause = gateway.limiter.take(caller.key.name, rate)
        if pause > 0:
            raise RateLimited(
                f"Key {caller.key.name!r} may submit {rate} jobs a minute; retry after the "
                "Retry-After seconds",
                retry_after=pause,
            )
        quota = caller.key.max_in_flight or settings.key_max_in_flight
    item = await read_submission(request, settings)
    if isinstance(item.image, str) and gateway.local_paths and not caller.is_open:
        raise InvalidImage(
            "Image paths are disabled on a gateway with API keys: set ADVISOR_IMAGE_ROOTS to "
            "the directories clients may read from, or send the image bytes inline"
        )
    if item.variant is not None and not caller.is_operator:
        raise VariantForbidden(
            "Forcing a variant bypasses the A/B split: it needs the operator token "
            "(Authorization: Bearer $ADVISOR_GATEWAY_TOKEN); leave `variant` out to be routed"
        )
    # The body's SubmitItem goes to the store as it is: no spreading and packing again.
    [handle] = await run_in_threadpool(
        partial(gateway.client.submit_many, [item], submitted_by=caller.name, max_in_flight=quota)
    )
    if not handle.published:
        # The reason (broker host, driver text) is on the row for operators, not for clients.
        status_url, _events_url = job_urls(handle.id)
        raise BrokerUnavailable(
            f"Job {handle.id} is stored but the broker did not take it yet; it is sent "
            "automatically once the broker is back, follow it at its status_url",
            job_id=handle.id,
            status_url=status_url,
        )
    return handle


def visible_job(gateway: Gateway, caller: Caller, job_id: str) -> Job:
    """The job, if `caller` may see it (a key sees only its own); 404 alike otherwise.

    For every endpoint about one job (status, events, feedback).
    """
    job = gateway.client.status(checked_job_id(job_id))
    if not caller.may_see(job):
        raise JobUnknown(f"No job {job_id[:80]!r} among the jobs of this key")
    return job


def _public(gateway: Gateway, job: Job) -> JobPublic:
    deliveries = gateway.client.deliveries_of(job.id)
    return job_public(job, gateway.settings.max_output_tokens, deliveries)


@router.get(
    "/jobs/{job_id}", response_model=JobPublic, responses=error_responses(401, 403, 404, 503)
)
def get_job(job_id: str, gateway: GatewayDep, caller: IntakeDep) -> JobPublic:
    return _public(gateway, visible_job(gateway, caller, job_id))


@router.delete(
    "/jobs/{job_id}",
    response_model=JobPublic,
    summary="Cancel a job",
    responses={
        202: {"model": JobPublic, "description": "running: it stops within about a second"},
        **error_responses(401, 403, 404, 409, 503),
    },
)
def cancel_job(
    job_id: str, gateway: GatewayDep, caller: IntakeDep, response: Response
) -> JobPublic:
    """A queued job is cancelled at once (200). A running one is asked to stop (202): its
    worker ends generation within about a second and records `cancelled`, keeping the
    partial text. A finished job answers 409 naming its status. A key cancels only its own."""
    job = gateway.client.cancel(visible_job(gateway, caller, job_id).id)
    if job.status != Status.CANCELLED:
        response.status_code = 202
    return _public(gateway, job)


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "`status`, `progress` and finally one `final` event (the job)",
        },
        **error_responses(401, 403, 404, 503),
    },
)
def job_event_stream(job_id: str, gateway: GatewayDep, caller: IntakeDep) -> StreamingResponse:
    visible_job(gateway, caller, job_id)  # 404 before the stream starts
    lease = gateway.streams.take()  # 503 too_busy when every stream slot is taken
    settings = gateway.settings
    events = job_events(
        gateway.client, job_id, settings.max_output_tokens, lease=lease,
        max_seconds=settings.gateway_max_stream_seconds,
    )  # fmt: skip
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        # Also after a disconnect that cancelled the stream before its first event.
        background=BackgroundTask(lease.release),
    )


@router.post(
    "/jobs/{job_id}/feedback",
    status_code=201,
    response_model=FeedbackPublic,
    summary="Record a user's verdict on a job's critique",
    responses={
        200: {"model": FeedbackPublic, "description": "replaced this source's earlier feedback"},
        **error_responses(401, 403, 404, 409, 422, 503),
    },
)
def post_feedback(
    job_id: str,
    body: FeedbackSubmission,
    gateway: GatewayDep,
    caller: IntakeDep,
    response: Response,
) -> FeedbackPublic:
    """201 for a new rating; 200 when it replaced one from the same `source`. Only a succeeded
    job's critique can be rated (409 otherwise); a key rates only its own jobs."""
    job = visible_job(gateway, caller, job_id)
    record = gateway.client.feedback(job.id, body)  # the body is checked FeedbackValues
    if record.replaced:
        response.status_code = 200
    return feedback_public(record)
