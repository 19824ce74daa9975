"""Shadow work only when idle: a shadow message is put back while primary jobs wait.

A worker consumes its variant's queue and, after it, the variant's shadow queue. Redis hands
it the main queue first (`queue_order_strategy: priority`); kombu's embedded transport and
RabbitMQ alternate between the two, so the task asks here before it starts a shadow job,
and a shadow that must yield goes back to the end of the shadow queue as a new message (a
reject-and-requeue cannot be used: kombu's SQLAlchemy transport fails to restore messages).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from celery import Celery

from advisor_worker.scope import Delivery, Middleware, Skip
from jobs.broker import analyze_queue, queue_depths
from jobs.contracts import ANALYZE_TASK, SHADOW_QUEUE_SUFFIX, queue_for, shadow_queue_for
from jobs.errors import BrokerUnreachable

logger = logging.getLogger(__name__)


def is_shadow_delivery(delivery_info: Mapping[str, Any] | None) -> bool:
    """Whether the message came from a shadow queue (its routing key names the queue)."""
    key = (delivery_info or {}).get("routing_key") or ""
    return isinstance(key, str) and key.endswith(SHADOW_QUEUE_SUFFIX)


class ShadowGate(Middleware):
    """Says whether a shadow message must yield to primary jobs waiting in `variant`'s queue."""

    def __init__(self, app: Celery, variant: str) -> None:
        self.app = app
        self.variant = variant
        self.queue = queue_for(variant)

    def before_message(self, delivery: Delivery) -> None:
        if self.must_yield(delivery.delivery_info):
            # Primary jobs wait: the shadow goes back, its row untouched, for a later idle moment.
            kwargs = delivery.payload if isinstance(delivery.payload, dict) else {}
            self.put_back(kwargs)
            raise Skip("yielded")

    def must_yield(self, delivery_info: Mapping[str, Any] | None) -> bool:
        if not is_shadow_delivery(delivery_info):
            return False
        try:
            waiting = queue_depths(self.app, [self.queue])[self.queue]
        except BrokerUnreachable as exc:
            # The shadow runs: the same broker outage would stop primary deliveries too.
            logger.warning("Cannot see %s's depth (%s); running the shadow job", self.queue, exc)
            return False
        if waiting:
            logger.info("%d primary job(s) wait in %s: shadow job put back", waiting, self.queue)
        return waiting > 0

    def put_back(self, kwargs: Mapping[str, Any]) -> None:
        """The same request, to the end of the shadow queue; the delivered message is acked.

        Should this publish fail, the row stays queued and the sweep resends it once the
        shadow queue is empty.
        """
        self.app.send_task(
            ANALYZE_TASK,
            kwargs=dict(kwargs),
            queue=analyze_queue(self.variant, is_shadow=True),
            routing_key=shadow_queue_for(self.variant),
        )
