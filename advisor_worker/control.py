"""Celery remote control: the broker may inspect a worker, not steer it (unless a setting says so).

Anyone who can publish to the broker can broadcast `shutdown`, `pool_restart`, `rate_limit`
or `revoke` to every worker. The worker keeps Celery's inspection commands (what Flower and
`celery inspect` read) and answers every other command with a refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from celery.worker.control import Panel

logger = logging.getLogger(__name__)

# Read-only commands; the memory dumps (objgraph, memdump, memsample) are left out: costly.
INSPECTION = frozenset({
    "active", "active_queues", "clock", "conf", "hello", "ping", "query_task", "registered",
    "report", "reserved", "revoked", "scheduled", "stats",
})  # fmt: skip


def restrict_remote_control(
    commands: MutableMapping[str, Callable[..., Any]] | None = None,
) -> list[str]:
    """Replace every command outside INSPECTION with a refusal; returns the names refused.

    `commands` defaults to Celery's global registry, which the worker's mailbox dispatches
    from; call this before the worker starts.
    """
    registry: MutableMapping[str, Callable[..., Any]] = Panel.data if commands is None else commands
    refused = sorted(name for name in registry if name not in INSPECTION)
    for name in refused:
        registry[name] = _refusal(name)
    return refused


def _refusal(name: str) -> Callable[..., dict[str, str]]:
    def refuse(_state: Any, **_arguments: Any) -> dict[str, str]:
        logger.warning("Refused remote control command %r from the broker", name)
        return {
            "error": f"{name!r} refused: this worker accepts only inspection commands "
            "(set ADVISOR_WORKER_REMOTE_CONTROL=true to allow control)"
        }

    return refuse
