"""One message's scope: before/after hooks around the handler, the current job, one catch-all.

Like dramatiq's middleware: each per-message concern (the shadow gate, the hard time limit,
heartbeat tracking of the started job, the outcome notices) is a `Middleware` whose hooks
run around every message, in order before and in reverse after. Whatever the handler or a
hook raises ends in the one catch-all here, so one message's failure never reaches Celery
or stops the worker from serving the next.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from advisor_worker.errors import DatabaseUnavailable
from jobs.contracts import is_plausible_job_id
from store.models import Job

if TYPE_CHECKING:
    # Annotations only: this module stays MLX-free (the batch scheduler imports MLX).
    from advisor_worker.batching import Ticket

logger = logging.getLogger(__name__)

# Database retries give up this long before the hard limit, so the task ends on its own terms.
RETRY_MARGIN_SECONDS = 1.0


class Skip(Exception):  # noqa: N818 - a signal, like dramatiq's SkipMessage, not an error
    """Raised by a `before_message` hook: the message is not handled, and `result` says why."""

    def __init__(self, result: str) -> None:
        super().__init__(result)
        self.result = result


class Progress:
    """A running job's output-token count, written on the MLX thread, read by the heartbeat,
    and its cancel flag, set by the heartbeat, read by the MLX thread after every step."""

    def __init__(self) -> None:
        self.tokens = 0
        self.ticket: Ticket | None = None
        self.cancel = threading.Event()

    def set(self, tokens: int) -> None:
        self.tokens = tokens

    def read(self) -> int:
        return self.ticket.tokens if self.ticket is not None else self.tokens


@dataclass
class Delivery:
    """One message being served: what it carried, its limits, and its job once started."""

    payload: Any
    delivery_info: Mapping[str, Any] | None
    # Seconds: the soft limit, already the shorter of the setting's and the message's own.
    soft_limit: float
    # time.monotonic() of the hard limit; the time-limit hook sets the watchdog's own.
    deadline: float
    job: Job | None = None  # the current job, once its start succeeded
    progress: Progress = field(default_factory=Progress)
    on_start: Callable[[Delivery], None] | None = field(default=None, repr=False)

    @property
    def job_id(self) -> str | None:
        """The job the message names, when the id is plausible enough to look up."""
        job_id = self.payload.get("job_id") if isinstance(self.payload, dict) else None
        return job_id if is_plausible_job_id(job_id) else None

    @property
    def label(self) -> str:
        return self.job_id or "(no valid job id)"

    @property
    def retry_until(self) -> float:
        return self.deadline - RETRY_MARGIN_SECONDS

    def start(self, job: Job) -> None:
        """The handler started `job`: it becomes the current job and the start hooks run."""
        self.job = job
        if self.on_start is not None:
            self.on_start(self)


class Middleware:
    """Per-message hooks; each does nothing unless overridden."""

    def before_message(self, delivery: Delivery) -> None:
        """Before the handler; raise Skip to leave the message unhandled."""

    def after_start(self, delivery: Delivery) -> None:
        """Once the handler has started `delivery.job`."""

    def after_message(self, delivery: Delivery, result: str) -> None:
        """After the handler (or the catch-all), for each hook whose before_message ran."""


class Scope:
    """Runs each message through the hooks and the handler; the one catch-all is here.

    `on_error` turns what the handler raised into the message's result (a started job is
    failed with the reason there); it runs inside the catch-all too.
    """

    def __init__(
        self,
        handler: Callable[[Delivery], str],
        middleware: Sequence[Middleware],
        *,
        soft_limit: float,
        hard_limit: float,
        on_error: Callable[[Delivery, Exception], str] | None = None,
    ) -> None:
        self.handler = handler
        self.middleware = list(middleware)
        self.soft_limit = soft_limit
        self.hard_limit = hard_limit
        self.on_error = on_error

    def delivery(
        self,
        payload: Any,
        *,
        delivery_info: Mapping[str, Any] | None = None,
        soft_limit: float | None = None,
    ) -> Delivery:
        """A message's scope; its own soft limit (send_task(soft_time_limit=...)) can only
        shorten the setting's."""
        soft = self.soft_limit
        if soft_limit is not None and soft_limit > 0:
            soft = min(soft, soft_limit)
        return Delivery(
            payload, delivery_info, soft, time.monotonic() + self.hard_limit,
            on_start=self._started,
        )  # fmt: skip

    def run(self, delivery: Delivery) -> str:
        """Serve one message and say what happened; nothing it raises escapes."""
        entered: list[Middleware] = []
        try:
            for hook in self.middleware:
                hook.before_message(delivery)
                entered.append(hook)
            result = self.handler(delivery)
        except Skip as skip:
            result = skip.result
        except DatabaseUnavailable as exc:
            # The job's lease expires and the sweep hands it on; nothing else to do here.
            logger.error("Job %s: %s", delivery.label, exc)
            result = "database_unavailable"
        except Exception as exc:
            result = self._failed(delivery, exc)
        for hook in reversed(entered):
            try:
                hook.after_message(delivery, result)
            except Exception as exc:  # noqa: BLE001 - a hook's failure must not end the worker
                logger.error("Job %s: %s.after_message failed", delivery.label,
                             type(hook).__name__, exc_info=exc)  # fmt: skip
        return result

    def _started(self, delivery: Delivery) -> None:
        for hook in self.middleware:
            hook.after_start(delivery)

    def _failed(self, delivery: Delivery, exc: Exception) -> str:
        if self.on_error is not None:
            try:
                return self.on_error(delivery, exc)
            except DatabaseUnavailable as unavailable:
                logger.error("Job %s: %s", delivery.label, unavailable)
                return "database_unavailable"
            except Exception as second:  # noqa: BLE001 - recording the failure failed too
                exc = second
        logger.error("Job %s: unexpected error while handling its message", delivery.label,
                     exc_info=exc)  # fmt: skip
        return "error"
