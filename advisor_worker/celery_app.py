"""The worker's Celery app, and its one task, `advisor.analyze`, bound to a booted scope."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, Task

from advisor_worker.messages import checked_strategy
from advisor_worker.scope import Scope
from jobs.broker import make_celery
from jobs.contracts import ANALYZE_TASK
from jobs.settings import get_settings

logger = logging.getLogger(__name__)

# Configuration only (Flower reads it too); the task is registered by register_analyze.
app = make_celery(get_settings(), "advisor_worker")


def register_analyze(
    celery: Celery, scope: Scope, *, on_refused: Callable[[str, str], None]
) -> Task:
    """Register `advisor.analyze` on `celery`, serving each message through `scope`.

    `on_refused(job_id, problem)` records a message refused before it became a request.
    """
    # A malformed message is refused and logged before Celery builds a request from it.
    strategy = functools.partial(checked_strategy, on_refused=on_refused)

    @celery.task(name=ANALYZE_TASK, bind=True, Strategy=strategy, shared=False)
    def analyze(self: Task, *args: Any, **kwargs: Any) -> str:
        payload: Any = kwargs if not args else {"args": list(args), **kwargs}
        soft_limit = (self.request.timelimit or (None, None))[1]
        delivery = scope.delivery(
            payload,
            delivery_info=self.request.delivery_info,
            soft_limit=float(soft_limit) if soft_limit else None,
        )
        result = scope.run(delivery)
        logger.info("advisor.analyze %s -> %s", delivery.label, result)
        return result

    return analyze
