"""Job endpoints: POST /analyze, GET and DELETE /jobs/{id} (+ /events), POST /jobs/{id}/feedback."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from jobs.contracts import Status
from jobs.errors import InvalidImage
from producers.client import JobHandle
from producers.gateway.errors import BrokerUnavailable, JobUnknown
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
from producers.gateway.service import GatewayDep, SubmitterDep

router = APIRouter(tags=["jobs"])

_JOB_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _multipart_schema() -> dict[str, Any]:
    fields = SubmissionFields.model_json_schema()
    properties = {
        "file": {"type": "string", "format": "binary", "description": "the image file"},
        "image": {"type": "string", "description": "or: a path under ADVISOR_IMAGE_ROOTS"},
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
        **error_responses(400, 413, 415, 422, 503),
    },
    openapi_extra=ANALYZE_BODY,
)
async def analyze(
    gateway: SubmitterDep,
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
    item = await read_submission(request, gateway.settings)
    try:
        handle = await run_in_threadpool(
            gateway.client.submit, item.image, item.advisor, subject=item.subject,
            variant=item.variant, idempotency_key=item.idempotency_key, notify=item.notify,
            notify_queue=item.notify_queue, callback_url=item.callback_url,
        )  # fmt: skip
    except OSError as exc:
        # Only the path case reads files here (e.g. a name too long for the filesystem).
        raise InvalidImage(f"Image {str(item.image)[:200]!r} cannot be read: {exc}") from exc
    accepted = _accepted(handle)
    if not handle.created:
        # An earlier submit with this idempotency key made the job; it may be further along.
        accepted.status = (await run_in_threadpool(gateway.client.status, handle.id)).status
    if not handle.published:
        raise BrokerUnavailable(
            f"Job {handle.id} is stored but the broker did not take it ({handle.publish_error}); "
            "it is sent once the broker is back (`advisor sweep` or `advisor republish`)",
            job_id=handle.id,
            status_url=accepted.status_url,
        )
    if wait > 0:
        job = await wait_for(gateway.client, handle.id, wait)
        if is_final(job):
            deliveries = await run_in_threadpool(gateway.client.deliveries_of, job.id)
            public = job_public(job, gateway.settings.max_output_tokens, deliveries)
            return JSONResponse(jsonable_encoder(public), status_code=200)
        accepted.status = job.status
    response.headers["Location"] = accepted.status_url
    return accepted


@router.get("/jobs/{job_id}", response_model=JobPublic, responses=error_responses(404, 503))
def get_job(job_id: str, gateway: GatewayDep) -> JobPublic:
    job = gateway.client.status(checked_job_id(job_id))
    deliveries = gateway.client.deliveries_of(job.id)
    return job_public(job, gateway.settings.max_output_tokens, deliveries)


@router.delete(
    "/jobs/{job_id}",
    response_model=JobPublic,
    summary="Cancel a job",
    responses={
        202: {"model": JobPublic, "description": "running: it stops within about a second"},
        **error_responses(404, 409, 503),
    },
)
def cancel_job(job_id: str, gateway: GatewayDep, response: Response) -> JobPublic:
    """A queued job is cancelled at once (200). A running one is asked to stop (202): its
    worker ends generation within about a second and records `cancelled`, keeping the
    partial text. A finished job answers 409 naming its status."""
    job = gateway.client.cancel(checked_job_id(job_id))
    if job.status != Status.CANCELLED:
        response.status_code = 202
    deliveries = gateway.client.deliveries_of(job.id)
    return job_public(job, gateway.settings.max_output_tokens, deliveries)


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "`status`, `progress` and finally one `final` event (the job)",
        },
        **error_responses(404, 503),
    },
)
def job_event_stream(job_id: str, gateway: GatewayDep) -> StreamingResponse:
    gateway.client.status(checked_job_id(job_id))  # 404 before the stream starts
    return StreamingResponse(
        job_events(gateway.client, job_id, gateway.settings.max_output_tokens),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/jobs/{job_id}/feedback",
    status_code=201,
    response_model=FeedbackPublic,
    summary="Record a user's verdict on a job's critique",
    responses={
        200: {"model": FeedbackPublic, "description": "replaced this source's earlier feedback"},
        **error_responses(404, 409, 422, 503),
    },
)
def post_feedback(
    job_id: str, body: FeedbackSubmission, gateway: SubmitterDep, response: Response
) -> FeedbackPublic:
    """201 for a new rating; 200 when it replaced one from the same `source`. Only a succeeded
    job's critique can be rated (409 otherwise)."""
    record = gateway.client.feedback(
        checked_job_id(job_id), rating=body.rating, helpful=body.helpful, comment=body.comment,
        **({"source": body.source} if body.source is not None else {}),
    )  # fmt: skip
    if record.replaced:
        response.status_code = 200
    return feedback_public(record)
