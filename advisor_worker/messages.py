"""Checks on a task message before Celery builds its request: a broken one must not crash us.

Celery's consumer turns InvalidTaskError into a logged rejection, but a protocol-2 body that
is not `[args, kwargs, embed]` (or a message without an `id` header) makes its request
constructor raise ValueError, TypeError or KeyError, which end the worker; redelivered, such
a message would end every worker in turn. So this is the catch-all around each message: any
exception while taking one in becomes a rejection of that message, and the worker goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default as default_strategy
from kombu.exceptions import ContentDisallowed, DecodeError

from jobs.contracts import is_plausible_job_id
from jobs.errors import summary

logger = logging.getLogger(__name__)
# Exceptions Celery's consumer already turns into a logged rejection of the message.
HANDLED_BY_CELERY = (InvalidTaskError, ContentDisallowed, DecodeError)


def body_problem(headers: Any, payload: Any) -> str | None:
    """Why a protocol-2 message cannot become a request, or None if it can."""
    if not isinstance(headers, dict) or not isinstance(headers.get("id"), str):
        return "its headers carry no task id"
    timelimit = headers.get("timelimit")
    if timelimit is not None and not (
        isinstance(timelimit, list | tuple)
        and len(timelimit) == 2
        and all(v is None or isinstance(v, int | float) for v in timelimit)
    ):
        return f"its timelimit header is {str(timelimit)[:80]!r}, not [soft, hard]"
    for scheduled in ("eta", "expires"):
        # This service never schedules: a message held back in memory is a resource sink.
        if headers.get(scheduled) is not None:
            return f"its headers carry {scheduled!r}; analyze messages are never scheduled"
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        return f"its body is a {type(payload).__name__}, not [args, kwargs, embed]"
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        return f"its body holds {type(args).__name__} args and {type(kwargs).__name__} kwargs"
    if embed is not None and not isinstance(embed, dict):
        return f"its body's embed is a {type(embed).__name__}, not an object"
    return None


def readable_job_id(payload: Any) -> str | None:
    """The job id a decoded, refused body names: `{"job_id": ..}` or `[.., {"job_id": ..}, ..]`.

    Only a plausible id: a NUL byte or 5,000 characters name no row and are never looked up.
    """
    kwargs = payload[1] if isinstance(payload, list | tuple) and len(payload) >= 2 else payload
    job_id = kwargs.get("job_id") if isinstance(kwargs, dict) else None
    return job_id if is_plausible_job_id(job_id) else None


def checked_strategy(
    task: Any,
    app: Any,
    consumer: Any,
    *,
    on_refused: Callable[[str, str], None],
    **options: Any,
) -> Callable[..., Any]:
    """Celery's default strategy behind body_problem(); set as the task's `Strategy` with
    `on_refused(job_id, problem)` bound, which records a refused message on its job."""
    handler = default_strategy(task, app, consumer, **options)

    def checked(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any) -> Any:
        # body is only set for protocol 1, which this service never sends.
        problem = (
            "protocol 1 messages are not accepted"
            if body is not None
            # Decoding here raises ContentDisallowed or DecodeError, which Celery handles.
            else body_problem(message.headers, message.payload)
        )
        if problem is not None:
            job_id = readable_job_id(message.payload) if body is None else None
            if job_id is not None:
                on_refused(job_id, problem)
            raise InvalidTaskError(f"Refused a {task.name} message: {problem[:500]}")
        return handler(message, body, ack, reject, callbacks, **kw)

    return refusing_failures(checked, task.name)


def refusing_failures(handle: Callable[..., Any], task_name: str) -> Callable[..., Any]:
    """`handle` with every exception turned into a refusal of the one message it was given.

    Anything but InvalidTaskError, ContentDisallowed and DecodeError would stop the consumer
    ("Unrecoverable error"), and the redelivered message then the next worker.
    """

    def guarded(message: Any, *args: Any, **kw: Any) -> Any:
        try:
            return handle(message, *args, **kw)
        except HANDLED_BY_CELERY:
            raise
        except Exception as exc:
            logger.error("Refused a %s message that raised while taken in", task_name,
                         exc_info=exc)  # fmt: skip
            problem = summary(exc, typed=True, limit=300)
            raise InvalidTaskError(f"Refused a {task_name} message: {problem}") from exc

    return guarded
