"""Heartbeats: a background thread that tells producers this worker (and its variant) is alive."""

from __future__ import annotations

import logging
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from advisor_worker.scope import Delivery, Middleware
from store.repository import Repository

logger = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# Progress of a running job reaches its row at most this often (and at its first token).
PROGRESS_EVERY_SECONDS = 1.0
_TICK_SECONDS = 0.25


@dataclass
class _Tracked:
    tokens: Callable[[], int]
    on_cancel: Callable[[], None] | None = None
    written: int = 0
    written_at: float = 0.0
    is_cancelled: bool = False


class Heartbeat(Middleware):
    """The worker's one database-writing background thread.

    Every `interval` seconds it upserts the worker's row (slots in use included) and renews
    the lease of every job it holds; between beats it writes each job's token progress,
    read from a counter the MLX thread updates, so generation itself never waits on I/O.
    Every tick (0.25 s) it also asks whether any held job has a cancel request, and tells
    that job through its `on_cancel` (which sets a flag the MLX thread checks each step).
    """

    def __init__(
        self,
        repo: Repository,
        identity: dict[str, Any],
        *,
        interval: float,
        lease_seconds: float,
        slots: int = 1,
    ) -> None:
        self.repo = repo
        self.identity = identity
        self.interval = interval
        self.lease_seconds = lease_seconds
        self.slots = slots
        self._jobs: dict[str, _Tracked] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    @property
    def worker(self) -> str:
        return str(self.identity["worker"])

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def track(
        self,
        job_id: str,
        tokens: Callable[[], int],
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        """Hold `job_id` (lease renewed each beat); `tokens()` reads its output count;
        `on_cancel()` is called once, on this thread, when a cancel of the job is seen."""
        with self._lock:
            self._jobs[job_id] = _Tracked(tokens, on_cancel)

    def untrack(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    # The current-job hook: a started job is held (lease, progress, cancel) until it ends.
    def after_start(self, delivery: Delivery) -> None:
        assert delivery.job is not None
        progress = delivery.progress
        self.track(delivery.job.id, progress.read, on_cancel=progress.cancel.set)

    def after_message(self, delivery: Delivery, result: str) -> None:
        if delivery.job is None:
            return
        self.untrack(delivery.job.id)
        try:
            self.repo.count_done(self.worker)
        except SQLAlchemyError as exc:
            # A statistic only; it must not hide how the job itself ended.
            logger.warning("Could not count job %s as done: %s", delivery.job.id,
                           type(exc).__name__)  # fmt: skip

    @property
    def job_ids(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    def beat(self) -> None:
        with self._lock:
            held = dict(self._jobs)
        self.repo.beat(
            {
                **self.identity,
                "current_job": next(reversed(held), None),
                "peak_rss_mb": peak_rss_mb(),
                "slots": self.slots,
                "slots_in_use": len(held),
            }
        )
        for job_id, tracked in held.items():
            self._write_progress(job_id, tracked)

    def write_due_progress(self) -> None:
        """Progress of each held job whose count moved, at most once per PROGRESS_EVERY_SECONDS."""
        now = time.monotonic()
        with self._lock:
            held = list(self._jobs.items())
        for job_id, tracked in held:
            if tracked.tokens() != tracked.written and now - tracked.written_at >= (
                PROGRESS_EVERY_SECONDS
            ):
                self._write_progress(job_id, tracked)

    def check_cancels(self) -> None:
        """One indexed read for the held jobs; each newly cancelled one is told once."""
        with self._lock:
            watched = {j: t for j, t in self._jobs.items() if t.on_cancel and not t.is_cancelled}
        if not watched:
            return
        for job_id, requested_at in self.repo.cancel_requests(list(watched)).items():
            tracked = watched[job_id]
            tracked.is_cancelled = True
            logger.info("Job %s: cancel requested at %s; stopping it", job_id,
                        requested_at.isoformat())  # fmt: skip
            assert tracked.on_cancel is not None
            tracked.on_cancel()

    def _write_progress(self, job_id: str, tracked: _Tracked) -> None:
        tokens = tracked.tokens()
        self.repo.record_progress(job_id, self.worker, tokens, lease_seconds=self.lease_seconds)
        tracked.written, tracked.written_at = tokens, time.monotonic()

    def _run(self) -> None:
        next_beat = time.monotonic() + self.interval
        while not self._stop.wait(_TICK_SECONDS):
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.interval
                    self.beat()
                else:
                    self.write_due_progress()
                self.check_cancels()
            except SQLAlchemyError as exc:
                # The database may be briefly away; the next tick tries again.
                logger.warning(
                    "Heartbeat failed (%s); retrying in %.1fs",
                    exc.__class__.__name__,
                    self.interval,
                )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        try:
            self.repo.mark_stopped(self.worker)
        except SQLAlchemyError:
            logger.warning("Could not mark worker %s stopped; it will age out", self.worker)
