"""Retention: stored images (and, if asked, finished job rows) older than N days are deleted.

An image is kept while any queued or running job refers to it, whatever its age; job rows
are kept unless asked (the A/B report reads them). `advisor prune` runs one round; the
beat task the same on a schedule.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import Celery

from jobs.broker import beat_entry
from jobs.clock import utcnow
from jobs.contracts import PRUNE_TASK
from jobs.settings import Settings
from store.db import engine_for
from store.repository import Repository

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneReport:
    older_than_days: float
    images: int
    image_bytes: int
    jobs: int | None  # None: job rows were not pruned

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        rows = "job rows kept" if self.jobs is None else f"{self.jobs} finished job row(s)"
        return (
            f"Pruned {self.images} stored image(s) ({self.image_bytes / 1e6:.1f} MB) and {rows}, "
            f"older than {self.older_than_days:g} days"
        )


def prune(
    repository: Repository,
    *,
    older_than_days: float,
    jobs: bool = False,
    now: datetime | None = None,
) -> PruneReport:
    """One round: job rows first (if asked), so the images only they needed go too."""
    if not older_than_days > 0:
        raise ValueError(f"older_than_days must be > 0, got {older_than_days}")
    cutoff = (now or utcnow()) - timedelta(days=older_than_days)
    pruned_jobs = repository.prune_jobs(cutoff) if jobs else None
    images, size = repository.prune_images(cutoff)
    report = PruneReport(older_than_days, images, size, pruned_jobs)
    logger.info("%s", report.summary())
    return report


def register_prune_task(app: Celery, settings: Settings) -> Any:
    """Register PRUNE_TASK on `app` with the ADVISOR_RETENTION_* settings; see beat_schedule()."""

    @app.task(name=PRUNE_TASK, ignore_result=True)
    def prune_task() -> dict[str, Any]:
        repository = Repository(engine_for(settings.resolved_database_url))
        return prune(
            repository, older_than_days=settings.retention_days,
            jobs=settings.retention_prune_jobs,
        ).to_dict()  # fmt: skip

    return prune_task


def beat_schedule(
    interval_seconds: float = 86_400.0, *, queue: str | None = None
) -> dict[str, Any]:
    """The entry for `app.conf.beat_schedule` (daily by default)."""
    return beat_entry("advisor-prune", PRUNE_TASK, interval_seconds, queue=queue)
