"""Database calls that wait out an outage: retried with exponential backoff until a deadline."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from advisor_worker.errors import DatabaseUnavailable
from jobs.errors import summary

logger = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_DELAY = 0.25
MAX_DELAY = 4.0


def is_transient(exc: DBAPIError) -> bool:
    """Lost connections, a server restarting, a locked SQLite file: worth waiting for."""
    return isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated


def call_with_backoff(
    fn: Callable[[], T],
    *,
    what: str,
    deadline: float,
    first_delay: float = FIRST_DELAY,
    max_delay: float = MAX_DELAY,
) -> T:
    """`fn()`, retried on transient database errors until `deadline` (time.monotonic()).

    Each retry is logged; past the deadline DatabaseUnavailable is raised, chained.
    Any other error propagates at once.
    """
    delay = first_delay
    retries = 0
    while True:
        try:
            return fn()
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            remaining = deadline - time.monotonic()
            reason = summary(exc, typed=True, limit=200)
            if remaining <= 0:
                raise DatabaseUnavailable(
                    f"{what}: the database stayed unreachable through {retries} retries ({reason})"
                ) from exc
            retries += 1
            pause = min(delay, max_delay, remaining)
            logger.warning(
                "%s failed (%s); retry %d in %.2fs, giving up in %.0fs",
                what,
                reason,
                retries,
                pause,
                remaining,
            )
            time.sleep(pause)
            delay *= 2
