"""The worker's Celery app and its one task, `advisor.analyze` (thin: the work is in runtime.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery import Task

from jobs.broker import make_celery
from jobs.contracts import ANALYZE_TASK
from jobs.settings import get_settings

if TYPE_CHECKING:
    from advisor_worker.runtime import WorkerRuntime
    from advisor_worker.shadow import ShadowGate

logger = logging.getLogger(__name__)

# A refusal is recorded on the consumer thread: a database outage must not stall consumption.
REFUSAL_RETRY_SECONDS = 5.0

app = make_celery(get_settings(), "advisor_worker")
_runtime: WorkerRuntime | None = None
_shadow_gate: ShadowGate | None = None


def bind_runtime(runtime: WorkerRuntime | None) -> None:
    """Set by `advisor-worker run` once the model is loaded, before the consumer starts."""
    global _runtime
    _runtime = runtime


def bind_shadow_gate(gate: ShadowGate | None) -> None:
    """Set by `advisor-worker run` when the worker also consumes its shadow queue."""
    global _shadow_gate
    _shadow_gate = gate


def record_refused(job_id: str, problem: str) -> None:
    """A message refused before it became a request still leaves its reason on the job.

    This runs on the consumer itself, so it waits for the database only briefly.
    """
    if _runtime is not None:
        _runtime.record_malformed(job_id, problem, retry_for=REFUSAL_RETRY_SECONDS)


# A malformed message is refused and logged before Celery builds a request from it.
@app.task(name=ANALYZE_TASK, bind=True, Strategy="advisor_worker.messages:checked_strategy")
def analyze(self: Task, *args: Any, **kwargs: Any) -> str:
    if _runtime is None:
        raise RuntimeError("advisor.analyze ran in a process without a loaded model")
    if _shadow_gate is not None and _shadow_gate.must_yield(self.request.delivery_info):
        # Primary jobs wait: the shadow goes back, its row untouched, for a later idle moment.
        _shadow_gate.put_back(kwargs)
        return "yielded"
    payload: Any = kwargs if not args else {"args": list(args), **kwargs}
    # A message's own soft limit (send_task(soft_time_limit=...)) can shorten the setting's.
    soft_limit = (self.request.timelimit or (None, None))[1]
    result = _runtime.handle(payload, soft_limit=float(soft_limit) if soft_limit else None)
    logger.info("advisor.analyze %s -> %s", kwargs.get("job_id"), result)
    return result
