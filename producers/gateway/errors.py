"""Errors of the HTTP gateway; each carries the HTTP status and the stable code it answers with."""

from __future__ import annotations

import math
from typing import Any

from producers.errors import ProducerError


class GatewayError(ProducerError):
    """Root of every error the gateway raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidBody(GatewayError):
    """The body is not what its content type promises (bad JSON, bad base64, bad multipart)."""

    status = 400
    code = "invalid_body"


class InvalidBase64(InvalidBody):
    """`image_base64` is not valid base64."""

    code = "invalid_base64"


class Unauthorized(GatewayError):
    """The bearer token is missing or wrong."""

    status = 401
    code = "unauthorized"


class Forbidden(GatewayError):
    """The caller is known but may not do this (a key of the wrong scope)."""

    status = 403
    code = "forbidden"


class VariantForbidden(Forbidden):
    """Forcing a variant bypasses the split: only the operator token may do it."""

    code = "variant_forbidden"


class JobUnknown(GatewayError):
    """No job has this id (or the id cannot be one)."""

    status = 404
    code = "job_not_found"


class BodyTimeout(GatewayError):
    """The request body did not arrive within ADVISOR_GATEWAY_BODY_TIMEOUT_SECONDS."""

    status = 408
    code = "body_timeout"


class BodyTooLarge(GatewayError):
    """The request body exceeds ADVISOR_GATEWAY_MAX_BODY_BYTES."""

    status = 413
    code = "body_too_large"


class UnsupportedMediaType(GatewayError):
    """The request's or the upload's content type is not one the endpoint takes."""

    status = 415
    code = "unsupported_media_type"


class InvalidInput(GatewayError):
    """A well-formed body whose values are unusable (missing or contradictory fields)."""

    status = 422
    code = "validation_error"


class RateLimited(GatewayError):
    """The key submitted more than its rate allows; Retry-After says when it may again."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=max(1, math.ceil(retry_after)))
        self.retry_after = max(1, math.ceil(retry_after))


class ServiceUnavailable(GatewayError):
    """A dependency (database, broker) is down, or a feature is not configured."""

    status = 503
    code = "service_unavailable"


class TooBusy(ServiceUnavailable):
    """Every event-stream (or ?wait) slot of this gateway is taken; retry shortly."""

    code = "too_busy"


class BrokerUnavailable(ServiceUnavailable):
    """The broker did not take the job's message; the stored job waits for the republisher."""

    code = "broker_unavailable"


class RolloutsDisabled(ServiceUnavailable):
    """No ADVISOR_GATEWAY_TOKEN is set, so the rollout endpoints refuse every call."""

    code = "rollouts_disabled"
