"""The hard time limit: solo and thread pools have none, so a thread ends an overrunning process."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from advisor_worker.scope import Delivery, Middleware

logger = logging.getLogger(__name__)

# EX_SOFTWARE: the supervisor (launchd, systemd, compose) sees a failure and restarts us.
EXIT_HARD_LIMIT = 70


class Watchdog(Middleware):
    """Armed around each message (or task); past `limit_seconds` the process exits at once.

    The unacknowledged message is then redelivered (acks late, reject on worker lost) or
    recovered by the sweep, and the job's attempts count the lost run.
    """

    def __init__(self, limit_seconds: float, *, poll_seconds: float = 0.5) -> None:
        self.limit_seconds = limit_seconds
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        # One entry per task being served (B of them on a batching worker).
        self._armed: dict[int, tuple[float, str]] = {}
        self._serial = 0
        self._by_delivery: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.poll_seconds + 1)

    @property
    def deadline(self) -> float | None:
        """When the first armed task will be killed (time.monotonic()), or None when idle."""
        with self._lock:
            return min((d for d, _ in self._armed.values()), default=None)

    def arm(self, label: str) -> tuple[int, float]:
        """Guard one task until disarm(key); returns (key, its deadline)."""
        deadline = time.monotonic() + self.limit_seconds
        with self._lock:
            self._serial += 1
            key = self._serial
            self._armed[key] = (deadline, label)
        return key, deadline

    def disarm(self, key: int) -> None:
        with self._lock:
            self._armed.pop(key, None)

    @contextmanager
    def armed(self, label: str) -> Iterator[float]:
        """Guard one task; yields its deadline."""
        key, deadline = self.arm(label)
        try:
            yield deadline
        finally:
            self.disarm(key)

    # The time-limit hook: every message is armed, and its deadline is the watchdog's.
    def before_message(self, delivery: Delivery) -> None:
        key, delivery.deadline = self.arm(delivery.label)
        with self._lock:
            self._by_delivery[id(delivery)] = key

    def after_message(self, delivery: Delivery, result: str) -> None:
        with self._lock:
            key = self._by_delivery.pop(id(delivery), None)
        if key is not None:
            self.disarm(key)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            now = time.monotonic()
            with self._lock:
                overdue = [label for deadline, label in self._armed.values() if now > deadline]
            if overdue:
                self._expire(", ".join(overdue))

    def _expire(self, label: str) -> None:
        logger.critical(
            "Task %s ran past the hard time limit of %gs (ADVISOR_TASK_TIME_LIMIT); exiting so "
            "it is redelivered, this attempt counting toward ADVISOR_MAX_ATTEMPTS",
            label,
            self.limit_seconds,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        # No cleanup: the stuck thread may hold locks that a normal exit would wait on.
        os._exit(EXIT_HARD_LIMIT)
