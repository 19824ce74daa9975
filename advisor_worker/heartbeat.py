"""Heartbeats: a background thread that tells producers this worker (and its variant) is alive."""

from __future__ import annotations

import logging
import resource
import sys
import threading
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from jobs.repository import Repository

logger = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class Heartbeat:
    """Upserts the worker's row every `interval` seconds and renews the lease of its job."""

    def __init__(
        self,
        repo: Repository,
        identity: dict[str, Any],
        *,
        interval: float,
        lease_seconds: float,
    ) -> None:
        self.repo = repo
        self.identity = identity
        self.interval = interval
        self.lease_seconds = lease_seconds
        self.current_job: str | None = None
        self.current_tokens = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    @property
    def worker(self) -> str:
        return str(self.identity["worker"])

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        self.repo.beat(
            {**self.identity, "current_job": self.current_job, "peak_rss_mb": peak_rss_mb()}
        )
        if self.current_job is not None:
            self.repo.record_progress(
                self.current_job, self.worker, self.current_tokens, lease_seconds=self.lease_seconds
            )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except SQLAlchemyError as exc:
                # The database may be briefly away; the next beat tries again.
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
