"""The loop the long-running operations (guard, sweep) share: a round every interval."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")


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
