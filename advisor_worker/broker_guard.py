"""A Redis broker restart must not stop the worker: kombu's restore on a detached transport.

When the connection to Redis drops, Celery's consumer closes it and reconnects. kombu 5.x's
Redis channel restores its unacknowledged messages while it closes (`QoS.restore_unacked`),
and that needs a client built from the connection's URL. If the transport has already been
detached from its connection (a close that got there first, as when a task thread's ack
failed on the dead connection), the URL is gone: `_connparams` raises AttributeError
('NoneType' object has no attribute 'hostname'), which is not one of the transport's
connection errors, so the consumer reports an unrecoverable error and the worker shuts down
(celery/kombu#582 is the same failure). Seen here when Redis restarted under a batch of four.

The guard skips that one restore and says so. Nothing is lost: the messages stay in Redis's
unacked set, which kombu puts back in the queue after the visibility timeout, and the sweep
re-sends every queued job a broker lost (docs/reliability.md).
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)

__all__ = ["install"]

_upstream_restore = kombu_redis.QoS.restore_unacked


def _restore_unacked(self: Any, client: Any = None) -> Any:
    connection = getattr(self.channel, "connection", None)
    if client is None and getattr(connection, "client", None) is None:
        logger.warning(
            "Redis connection already closed: %d unacknowledged message(s) stay in Redis's "
            "unacked set, restored after the visibility timeout (the sweep re-sends lost jobs)",
            len(self._delivered),
        )
        return None
    return _upstream_restore(self, client)


def install() -> None:
    """Make every Redis channel's restore tolerate a detached transport; idempotent."""
    setattr(kombu_redis.QoS, "restore_unacked", _restore_unacked)  # noqa: B010
