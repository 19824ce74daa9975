"""Checks on a task message before Celery builds its request: a broken one must not crash us.

Celery's consumer turns InvalidTaskError into a logged rejection, but a protocol-2 body that
is not `[args, kwargs, embed]` (or a message without an `id` header) makes its request
constructor raise ValueError, TypeError or KeyError, which end the worker; redelivered, such
a message would end every worker in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default as default_strategy


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
        return f"its timelimit header is {timelimit!r}, not [soft, hard]"
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        return f"its body is a {type(payload).__name__}, not [args, kwargs, embed]"
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        return f"its body holds {type(args).__name__} args and {type(kwargs).__name__} kwargs"
    if embed is not None and not isinstance(embed, dict):
        return f"its body's embed is a {type(embed).__name__}, not an object"
    return None


def readable_job_id(payload: Any) -> str | None:
    """The job id a decoded, refused body names: `{"job_id": ..}` or `[.., {"job_id": ..}, ..]`."""
    kwargs = payload[1] if isinstance(payload, list | tuple) and len(payload) >= 2 else payload
    job_id = kwargs.get("job_id") if isinstance(kwargs, dict) else None
    return job_id if isinstance(job_id, str) and job_id else None


def checked_strategy(task: Any, app: Any, consumer: Any, **options: Any) -> Callable[..., Any]:
    """Celery's default strategy behind body_problem(); set as the task's `Strategy`."""
    from advisor_worker.celery_app import record_refused as on_refused

    handler = default_strategy(task, app, consumer, **options)

    def handle(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any) -> Any:
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
            raise InvalidTaskError(f"Refused a {task.name} message: {problem}")
        return handler(message, body, ack, reject, callbacks, **kw)

    return handle
