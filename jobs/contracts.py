"""The wire contract between producers and workers: task name, queue names, message schema."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

ANALYZE_TASK = "advisor.analyze"
SWEEP_TASK = "advisor.sweep"
GUARD_TASK = "advisor.guard"
PRUNE_TASK = "advisor.prune"
QUEUE_PREFIX = "advisor."
SHADOW_QUEUE_SUFFIX = ".shadow"
BASE_VARIANT = "base"
# A job's image_ref: an image stored in the database; `path:` only on rows submitted before
# path photos were read at submit (workers still serve those from ADVISOR_IMAGE_ROOTS).
PATH_PREFIX = "path:"
STORED_PREFIX = "sha256:"
# Widths the job row and the message share; producers check them before a row exists.
NAME_WIDTH = 200  # subject, idempotency key, notice task and queue names
# Every client string carries one of these two patterns. No C0, DEL or C1 control: they have
# no place in names, keys or reasons (PostgreSQL refuses NUL).
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]+$"
# Prose (a feedback comment) may break lines and indent; every other control is refused.
PROSE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
IMAGE_REF_WIDTH = 4096  # the jobs.image_ref column and the message's image_ref
MAX_IMAGE_PATH = IMAGE_REF_WIDTH - len(PATH_PREFIX)  # a path reference fits the column
FINE_TUNED_VARIANT = "fine_tuned"

_VARIANT_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# Names a client chooses for its notices. Task names travel inside messages; queues become
# broker keys, so a client's queue lives under its own prefix and can never name the broker's
# own objects (kombu's `unacked`, `unacked_index`, `_kombu.binding.*`) or the service's queues.
NOTIFY_QUEUE_PREFIX = "advisor.notify."
CLIENT_NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_.:-]{0,99}"
_CLIENT_NAME = re.compile(CLIENT_NAME_PATTERN)  # fullmatch: `$` would allow a trailing newline
_NOTIFY_QUEUE = re.compile(rf"{re.escape(NOTIFY_QUEUE_PREFIX)}{CLIENT_NAME_PATTERN}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Job ids are UUIDs (36 characters); a few tools write their own within the column's width.
_JOB_ID = re.compile(r"^[A-Za-z0-9._:-]{1,36}$")


def queue_for(variant: str) -> str:
    """The Celery queue that workers of `variant` consume."""
    if not _VARIANT_NAME.fullmatch(variant):
        raise ValueError(f"Invalid variant name {variant!r}: use lowercase letters, digits, _ or -")
    return f"{QUEUE_PREFIX}{variant}"


def shadow_queue_for(variant: str) -> str:
    """The queue of `variant`'s shadow jobs, which its workers take only when idle."""
    return f"{queue_for(variant)}{SHADOW_QUEUE_SUFFIX}"


def queue_of(variant: str, *, is_shadow: bool) -> str:
    return shadow_queue_for(variant) if is_shadow else queue_for(variant)


def is_valid_variant_name(name: str) -> bool:
    return bool(_VARIANT_NAME.fullmatch(name))


def is_notify_task_name(name: object) -> bool:
    """A completion task's name: `app.critique_done` (letters first; _ . : - within)."""
    return isinstance(name, str) and _CLIENT_NAME.fullmatch(name) is not None


def is_notify_queue(name: object) -> bool:
    """A completion task's queue: `advisor.notify.` then a client name (`advisor.notify.app`)."""
    return isinstance(name, str) and _NOTIFY_QUEUE.fullmatch(name) is not None


def is_storable_text(value: str) -> bool:
    """No control characters (PostgreSQL refuses NUL) and valid UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return _CONTROL.search(value) is None


def is_plausible_job_id(value: object) -> bool:
    """Could `value` be the id of a job row? Anything else is never looked up."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})


class DeliveryKind(StrEnum):
    """How a finished job's outcome reaches its submitter besides polling."""

    TASK = "task"  # a Celery task published to the submitter's own queue
    WEBHOOK = "webhook"  # a signed HTTP POST


class DeliveryState(StrEnum):
    PENDING = "pending"  # due once the job is final; sent, or retried after a failure
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"  # refused, or out of attempts; `advisor deliveries retry`


class Assignment(StrEnum):
    SPLIT = "split"
    FORCED = "forced"
    FALLBACK = "fallback"
    SHADOW = "shadow"  # a paired run of a split job on the other arm; never returned


class ErrorKind(StrEnum):
    INVALID_IMAGE = "invalid_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    UNKNOWN_ADVISOR = "unknown_advisor"
    INVALID_REQUEST = "invalid_request"
    INVALID_OUTPUT = "invalid_output"
    TIMEOUT = "timeout"
    POISON = "poison"
    WRONG_VARIANT = "wrong_variant"
    INTERNAL = "internal"
    SHADOW_DROPPED = "shadow_dropped"  # a queued shadow job whose candidate was rolled back


class ModelUsed(StrEnum):
    """The seed's vocabulary for which model served a job."""

    BASE = "base"
    FINE_TUNED = "fine_tuned"
    AB_TEST_BASE = "ab_test_base"
    AB_TEST_FINE_TUNED = "ab_test_fine_tuned"


def model_used_for(
    variant: str, assignment: Assignment, weights: Mapping[str, float] | None = None
) -> ModelUsed:
    """The seed's label for a job on `variant`; the router and the drain both ask here.

    `ab_test_base` / `ab_test_fine_tuned`: the split chose the variant (assignment `split`)
    and the split it chose from, `weights`, gives more than one variant a weight > 0.
    `base` / `fine_tuned`: everything else: forced, fallback, or a split that sends all of
    the advisor's traffic to one variant (100% is no A/B test). Any non-base variant is
    `fine_tuned`. Without `weights` (a row written without routing) a split counts as A/B.
    """
    is_base = variant == BASE_VARIANT
    is_ab_test = assignment is Assignment.SPLIT and (
        weights is None or sum(1 for w in weights.values() if w > 0) > 1
    )
    if is_ab_test:
        return ModelUsed.AB_TEST_BASE if is_base else ModelUsed.AB_TEST_FINE_TUNED
    return ModelUsed.BASE if is_base else ModelUsed.FINE_TUNED


# The analyze message's contract version; a worker serves these and refuses others by name.
MESSAGE_VERSION = 2
SERVED_MESSAGE_VERSIONS = (1, 2)


class AnalyzeRequest(BaseModel):
    """The body of an `advisor.analyze` message: the job, its variant and the version.

    The job row holds the rest. Fields this version does not know are ignored, so a newer
    producer may add optional ones during a rolling upgrade.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = MESSAGE_VERSION
    job_id: str = Field(min_length=1, max_length=64)
    variant: str = Field(min_length=1, max_length=63)


class AnalyzeRequestV1(BaseModel):
    """Version 1 (no `version` field): it also named the advisor and image, which the row holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(min_length=1, max_length=64)
    advisor: str = Field(min_length=1, max_length=64)
    variant: str = Field(min_length=1, max_length=63)
    image_ref: str = Field(min_length=1, max_length=IMAGE_REF_WIDTH)

    def upgraded(self) -> AnalyzeRequest:
        return AnalyzeRequest(version=1, job_id=self.job_id, variant=self.variant)


class UnservedVersion(ValueError):
    """An analyze message of a contract version this code does not serve."""


def read_request(payload: object) -> AnalyzeRequest:
    """Any served version of the message as the current request.

    Raises pydantic's ValidationError for a malformed body and UnservedVersion, naming the
    served versions, for a version this code does not know.
    """
    if not isinstance(payload, Mapping):
        return AnalyzeRequestV1.model_validate(payload).upgraded()  # refused, naming the type
    body = dict(payload)
    version = body.pop("version", 1)
    if version == 1 and not isinstance(version, bool):
        return AnalyzeRequestV1.model_validate(body).upgraded()
    if version == MESSAGE_VERSION and not isinstance(version, bool):
        return AnalyzeRequest.model_validate({**body, "version": version})
    served = ", ".join(map(str, SERVED_MESSAGE_VERSIONS))
    raise UnservedVersion(
        f"Message version {repr(version)[:40]} is not served by this worker, which serves "
        f"versions {served}; upgrade the worker or resubmit the job"
    )
