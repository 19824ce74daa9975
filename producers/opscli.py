"""Shared pieces of the operator commands (report, guard, capacity): argument types, error lines."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from jobs.errors import summary

logger = logging.getLogger(__name__)
T = TypeVar("T")


def positive(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    value = positive(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def one_line(exc: BaseException) -> str:
    """A one-line reason for stderr; database errors point at the usual fix."""
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {summary(exc)} (is ADVISOR_DATABASE_URL right and migrated?)"
    return summary(exc)


def run_rounds(
    name: str,
    round_: Callable[[], T],
    *,
    interval: float,
    transient: tuple[type[BaseException], ...],
    stop: threading.Event | None = None,
    on_round: Callable[[T], None] | None = None,
    delay_first: bool = False,
) -> int:
    """Call `round_` every `interval` seconds until `stop` is set; returns the rounds run.

    A `transient` error (a database or broker blip) is logged and the next round retries.
    """
    stop = stop or threading.Event()
    rounds = 0
    if delay_first and stop.wait(interval):
        return rounds
    while True:
        try:
            result = round_()
        except transient:
            logger.exception("%s round failed; retrying in %.0fs", name, interval)
        else:
            if on_round is not None:
                on_round(result)
        rounds += 1
        if stop.wait(interval):
            return rounds
