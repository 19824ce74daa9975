"""The one place exceptions become HTTP answers: `{"error": "<code>", "message": "..."}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from jobs.errors import (
    CallbackRefused,
    FeedbackRefused,
    IdempotencyConflict,
    InvalidFeedback,
    InvalidImage,
    InvalidWeights,
    JobNotFound,
    QuotaExceeded,
    StaleVersion,
    UnknownAdvisor,
    UnknownVariant,
    UnsupportedFormat,
    summary,
)
from jobs.incidents import IncidentKind, incident, kind_of
from producers.errors import (
    InvalidPlan,
    InvalidSubmission,
    JobFinished,
    PlanConflict,
    PlanNotFound,
    PublishFailed,
)
from producers.gateway.errors import GatewayError, RateLimited, RolloutsDisabled, Unauthorized

logger = logging.getLogger(__name__)

# Foreign exceptions (raised below the gateway) and what each means to an HTTP client.
FOREIGN: tuple[tuple[type[Exception], int, str], ...] = (
    (JobNotFound, 404, "job_not_found"),
    (IdempotencyConflict, 409, "idempotency_key_reused"),
    (StaleVersion, 409, "stale_version"),
    (QuotaExceeded, 429, "too_many_in_flight"),
    # Before InvalidImage, its parent: a refused format is a 415 naming the accepted ones.
    (UnsupportedFormat, 415, "unsupported_format"),
    (InvalidImage, 400, "invalid_image"),
    (UnknownAdvisor, 422, "unknown_advisor"),
    (UnknownVariant, 422, "unknown_variant"),
    (InvalidSubmission, 422, "invalid_submission"),
    (CallbackRefused, 422, "callback_refused"),
    (JobFinished, 409, "job_finished"),
    (InvalidWeights, 422, "invalid_weights"),
    # Before InvalidPlan, their parent.
    (PlanNotFound, 404, "plan_not_found"),
    (PlanConflict, 409, "plan_conflict"),
    (InvalidPlan, 422, "invalid_plan"),
    (InvalidFeedback, 422, "invalid_feedback"),
    (FeedbackRefused, 409, "feedback_refused"),
    (PublishFailed, 503, "broker_unavailable"),
    (OperationalError, 503, "database_unavailable"),
    (InterfaceError, 503, "database_unavailable"),
    (PoolTimeout, 503, "database_unavailable"),
)
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 409: "conflict"}
RETRY_AFTER_SECONDS = "5"


def problem(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The error body every endpoint answers with."""
    return JSONResponse(
        {"error": code, "message": message, **extra}, status_code=status, headers=headers
    )


def _headers_for(status: int, exc: BaseException) -> dict[str, str] | None:
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, QuotaExceeded):
        return {"Retry-After": RETRY_AFTER_SECONDS}
    if status == 503 and not isinstance(exc, RolloutsDisabled):
        # A dependency outage passes; a missing token does not, so no retry hint for it.
        return {"Retry-After": RETRY_AFTER_SECONDS}
    return None


async def _gateway_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return problem(exc.status, exc.code, exc.message, _headers_for(exc.status, exc), **exc.extra)


async def _foreign(request: Request, exc: Exception) -> JSONResponse:
    for kind, status, code in FOREIGN:
        if isinstance(exc, kind):
            if status == 503:
                # Driver and broker text names hosts, SQL and parameters: the log has it under
                # the reference, the client gets the fixed text.
                return _outage(request, exc, status, code)
            return problem(status, code, summary(exc), _headers_for(status, exc), **_extra_of(exc))
    return await _internal(request, exc)


def _outage(request: Request, exc: Exception, status: int, code: str) -> JSONResponse:
    found = incident(exc, f"{request.method} {request.url.path}", log=logger)
    return problem(status, code, found.text, _headers_for(status, exc), reference=found.reference)


def _extra_of(exc: Exception) -> dict[str, Any]:
    """Fields a client acts on: the version to retry with, the key that was reused, the
    formats accepted, the status a job ended with."""
    if isinstance(exc, StaleVersion):
        return {"current_version": exc.current}
    if isinstance(exc, IdempotencyConflict):
        return {"idempotency_key": exc.key}
    if isinstance(exc, QuotaExceeded):
        return {"limit": exc.limit}
    if isinstance(exc, UnsupportedFormat):
        return {"detected": exc.detected, "accepted": list(exc.accepted)}
    if isinstance(exc, JobFinished):
        # A 409 names the status the job ended with, for programs as well as people.
        return {"job_status": exc.status}
    return {}


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(d['loc'][1:]) or d['loc'][0]}: {d['msg']}" for d in details)
    return problem(422, "validation_error", summary or "Invalid request", details=details)


async def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return problem(exc.status_code, code, str(exc.detail), dict(exc.headers or {}) or None)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    """Anything not mapped above: an outage of a dependency not caught by type above (a
    driver's own error) is a 503, anything else a bug (500); either way the client reads a
    fixed text and the reference the gateway's log names it by, with the traceback."""
    kind = kind_of(exc)
    if kind == IncidentKind.NETWORK:
        kind = IncidentKind.INTERNAL  # the gateway calls out to no receiver: a file, a bug
    found = incident(exc, f"{request.method} {request.url.path}", kind=kind, log=logger)
    if found.kind in (IncidentKind.DATABASE, IncidentKind.BROKER):
        code = f"{found.kind}_unavailable"
        return problem(503, code, found.text, _headers_for(503, exc), reference=found.reference)
    return problem(500, "internal_error", found.text, incident=found.reference,
                   reference=found.reference)  # fmt: skip


def install(app: FastAPI) -> None:
    """Register every mapping above on `app`."""
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    for kind, _status, _code in FOREIGN:
        app.add_exception_handler(kind, _foreign)
    app.add_exception_handler(Exception, _internal)
