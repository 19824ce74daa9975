"""The gateway's request and response bodies, named by role."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from jobs.contracts import MAX_IMAGE_PATH, NAME_WIDTH, PRINTABLE
from producers.feedback import FeedbackRecord, FeedbackValues
from producers.rollouts import Weights
from producers.views import delivery_to_dict
from store.models import Delivery, Job

# Every client string field carries PRINTABLE or PROSE (a test walks the OpenAPI schema).
VariantName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=PRINTABLE)]
AdvisorPath = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE)]
MAX_WAIT_SECONDS = 600.0
EXPECTED_VERSION = (
    "compare-and-set: written only if the weights are still at this version (409 otherwise)"
)


class ErrorBody(BaseModel):
    """Every error answer; some carry extra fields (`details`, `job_id`, `limit`)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="stable machine-readable code, e.g. unknown_advisor")
    message: str = Field(description="what went wrong and the way out, for people")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses."""
    return {code: {"model": ErrorBody} for code in codes}


class SubmissionFields(BaseModel):
    """What every POST /analyze names besides the image (multipart: these form fields)."""

    model_config = ConfigDict(extra="forbid")

    advisor: str = Field(min_length=1, max_length=64, pattern=PRINTABLE, examples=["ansel"])
    subject: str | None = Field(
        default=None, min_length=1, max_length=NAME_WIDTH, pattern=PRINTABLE,
        description="sticky routing key (default: the image's sha256)",
    )  # fmt: skip
    variant: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=PRINTABLE,
        description="force a variant, bypassing the split",
    )  # fmt: skip
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=NAME_WIDTH, pattern=PRINTABLE,
        description="resubmitting with the same key returns the same job",
    )  # fmt: skip
    notify: str | None = Field(
        default=None, min_length=1, max_length=NAME_WIDTH, pattern=PRINTABLE,
        description="a Celery task your app's worker runs when the job ends (with notify_queue)",
    )  # fmt: skip
    notify_queue: str | None = Field(
        default=None, min_length=1, max_length=NAME_WIDTH, pattern=PRINTABLE,
        description="the queue that task is published to: advisor.notify.NAME (NAME: a letter, "
        "then letters, digits and _ . : -)",
    )  # fmt: skip
    callback_url: str | None = Field(
        default=None, min_length=1, max_length=2048, pattern=PRINTABLE,
        description="the outcome is POSTed here, signed (X-Advisor-Signature), at least once",
    )  # fmt: skip


class AnalyzeSubmission(SubmissionFields):
    """POST /analyze as JSON: an image path under the allowed roots, or the image's bytes."""

    image: str | None = Field(
        default=None, min_length=1, max_length=MAX_IMAGE_PATH, pattern=PRINTABLE,
        description="a path under ADVISOR_IMAGE_ROOTS (relative to a root, or absolute); "
        "unset, on a loopback gateway without keys: relative to its working directory. Read "
        "once and stored with the job",
    )  # fmt: skip
    image_base64: str | None = Field(default=None, description="the image file, base64")

    @model_validator(mode="after")
    def _one_image(self) -> AnalyzeSubmission:
        if (self.image is None) == (self.image_base64 is None):
            raise ValueError("give exactly one of `image` (a path) and `image_base64`")
        return self


class JobAccepted(BaseModel):
    """A job that was queued (202): where to follow it."""

    job_id: str
    status: str
    advisor: str
    variant: str
    assignment: str
    model_used: str
    weights_version: int
    created: bool = Field(description="false: an earlier submit with this idempotency key")
    status_url: str
    events_url: str


class CapturePublic(BaseModel):
    """Capture facts from the photo's EXIF (never GPS or serial numbers); null: not in the file."""

    make: str | None = None
    model: str | None = None
    lens: str | None = None
    focal_length_mm: float | None = None
    focal_length_35mm: int | None = None
    aperture: float | None = Field(default=None, description="the f-number")
    exposure_time_s: float | None = None
    iso: int | None = None
    captured_at: str | None = Field(default=None, description="ISO 8601, as the camera's clock")


class PhotoPublic(BaseModel):
    """What intake found: the format, the displayed size, the orientation and profile undone."""

    format: str = Field(examples=["JPEG", "HEIF", "AVIF"])
    width: int
    height: int
    orientation_applied: int = Field(description="EXIF orientation undone (1: none needed)")
    color_profile: str = Field(
        description="the ICC profile converted to sRGB from, or how a missing one was handled"
    )
    capture: CapturePublic


class AttemptPublic(BaseModel):
    at: str
    by: str = Field(description="the worker or sweep that sent it")
    ok: bool
    status_code: int | None = Field(description="the receiver's HTTP status (webhooks)")
    error: str | None
    ms: int


class DeliveryPublic(BaseModel):
    """One outcome notice of the job: a completion task or a webhook, and its attempts."""

    id: str = Field(description="the X-Advisor-Delivery header, or the task id")
    kind: Literal["task", "webhook"]
    target: str = Field(description="task@queue, or the callback URL (query hidden)")
    state: Literal["pending", "delivered", "undelivered"]
    attempts: int
    next_attempt_at: str | None
    delivered_at: str | None
    last_error: str | None
    log: list[AttemptPublic]


class FeedbackSubmission(FeedbackValues):
    """POST /jobs/{id}/feedback: the app's user's verdict on the job's critique."""


class FeedbackPublic(BaseModel):
    """Stored feedback; `replaced`: an earlier one from this source was overwritten (200)."""

    job_id: str
    source: str
    rating: int
    helpful: bool | None
    comment: str | None
    simulated: bool
    created_at: datetime
    updated_at: datetime
    replaced: bool


def feedback_public(record: FeedbackRecord) -> FeedbackPublic:
    return FeedbackPublic(
        job_id=record.job_id, source=record.source, rating=record.rating,
        helpful=record.helpful, comment=record.comment, simulated=record.simulated,
        created_at=record.created_at, updated_at=record.updated_at, replaced=record.replaced,
    )  # fmt: skip


class JobPublic(BaseModel):
    """A job as clients see it; `analysis` is the validated Analysis once it succeeded."""

    id: str
    status: str
    advisor: str
    variant: str
    assignment: str
    model_used: str
    weights_version: int
    subject: str
    attempts: int
    progress: int = Field(description="output tokens generated so far")
    max_output_tokens: int
    published: bool
    publish_error: str | None
    queued_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    queue_wait_ms: int | None
    inference_ms: int | None
    prompt_tokens: int | None
    output_tokens: int | None
    base_model: str | None
    adapter_fingerprint: str | None
    photo: PhotoPublic | None
    prompt_version: str | None
    model_image_width: int | None = Field(description="pixels of the image the model got")
    model_image_height: int | None
    image_tokens: int | None = Field(description="prompt tokens the image took")
    error_kind: str | None
    error: str | None
    cancel_requested_at: datetime | None
    analysis: dict[str, Any] | None
    deliveries: list[DeliveryPublic]
    status_url: str
    events_url: str


def job_urls(job_id: str) -> tuple[str, str]:
    return f"/jobs/{job_id}", f"/jobs/{job_id}/events"


UNSENT = "not yet taken by the broker; it is sent again automatically"


def public_publish_error(job: Job) -> str | None:
    """What clients learn of a failed publish: that it will be retried, not the broker's hosts."""
    return UNSENT if job.publish_error and job.published_at is None else None


def job_public(
    job: Job, max_output_tokens: int, deliveries: list[Delivery] | None = None
) -> JobPublic:
    status_url, events_url = job_urls(job.id)
    notices = [DeliveryPublic.model_validate(delivery_to_dict(d)) for d in deliveries or []]
    return JobPublic(
        id=job.id, status=job.status, advisor=job.advisor, variant=job.variant,
        assignment=job.assignment, model_used=job.model_used,
        weights_version=job.weights_version, subject=job.subject, attempts=job.attempts,
        progress=job.progress or 0, max_output_tokens=max_output_tokens,
        published=job.published_at is not None, publish_error=public_publish_error(job),
        queued_at=job.queued_at, started_at=job.started_at, completed_at=job.completed_at,
        queue_wait_ms=job.queue_wait_ms, inference_ms=job.inference_ms,
        prompt_tokens=job.prompt_tokens, output_tokens=job.output_tokens,
        base_model=job.base_model, adapter_fingerprint=job.adapter_fingerprint,
        photo=PhotoPublic.model_validate(job.photo) if job.photo else None,
        prompt_version=job.prompt_version,
        model_image_width=job.model_image_width, model_image_height=job.model_image_height,
        image_tokens=job.image_tokens, error_kind=job.error_kind, error=job.error,
        cancel_requested_at=job.cancel_requested_at, analysis=job.llm_outputs,
        deliveries=notices, status_url=status_url, events_url=events_url,
    )  # fmt: skip


class DependencyHealth(BaseModel):
    ok: bool
    detail: str


class QueueHealth(BaseModel):
    queue: str
    variant: str
    live_workers: int | None = Field(description="workers with a fresh heartbeat (null: unknown)")
    depth: int | None = Field(description="messages waiting in the broker (null: unknown)")
    slots: int | None = Field(
        default=None, description="analyses the live workers generate at once (sum of their B)"
    )
    slots_in_use: int | None = Field(default=None, description="of those, holding a job now")


class HealthReport(BaseModel):
    """`down` (503) when the database or the broker is unreachable; `degraded` (200) when no
    live worker serves the base queue, so new jobs would wait."""

    status: Literal["ok", "degraded", "down"]
    database: DependencyHealth
    broker: DependencyHealth
    queues: list[QueueHealth]


class RolloutPublic(BaseModel):
    advisor: str
    weights: dict[str, float]
    version: int
    updated_at: datetime | None
    updated_by: str
    reason: str
    shadow: float = Field(description="share of split jobs also run on the other arm")
    variants: list[str] = Field(description="variants that may serve this advisor")
    live: list[str] = Field(description="of those, the ones with a live worker")


def rollout_public(weights: Weights, variants: list[str], live: list[str]) -> RolloutPublic:
    return RolloutPublic(
        advisor=weights.advisor, weights=dict(weights.weights), version=weights.version,
        updated_at=weights.updated_at, updated_by=weights.updated_by, reason=weights.reason,
        shadow=weights.shadow, variants=variants, live=live,
    )  # fmt: skip


class RolloutUpdate(BaseModel):
    """PUT /rollouts/{advisor}: the new weights (normalised to sum 1) and why."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[VariantName, float] = Field(examples=[{"base": 0.9, "fine_tuned": 0.1}])
    reason: str = Field(min_length=1, max_length=2000, pattern=PRINTABLE)
    shadow: float | None = Field(
        default=None, ge=0, le=1,
        description="share of split jobs also run on the other arm as paired shadow jobs "
        "(omitted: unchanged)",
    )  # fmt: skip
    actor: str | None = Field(
        default=None, min_length=1, max_length=120, pattern=PRINTABLE,
        description="who asks, for the audit trail (default: gateway@HOST)",
    )  # fmt: skip
    expected_version: int | None = Field(default=None, ge=0, description=EXPECTED_VERSION)


class RollbackRequest(BaseModel):
    """POST /rollouts/{advisor}/rollback: every non-base weight to 0, optionally draining."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, pattern=PRINTABLE)
    drain: bool = Field(default=False, description="also move queued jobs to base")
    actor: str | None = Field(default=None, min_length=1, max_length=120, pattern=PRINTABLE)
    expected_version: int | None = Field(default=None, ge=0, description=EXPECTED_VERSION)


class RollbackPublic(BaseModel):
    advisor: str
    weights: dict[str, float]
    version: int
    drained: list[str] = Field(description="ids of queued jobs moved to base")
    republished: int
