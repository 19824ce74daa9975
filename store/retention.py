"""Retention: deleting old finished jobs and stored images no live job needs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    and_,
    delete,
    func,
    literal,
    select,
)

from jobs.contracts import (
    STORED_PREFIX,
    Status,
)
from store.models import Job, StoredImage
from store.reading import Reader


class Retention(Reader):
    """The prune's deletes."""

    def prune_images(self, before: datetime) -> tuple[int, int]:
        """Delete stored images older than `before` that no queued or running job needs.

        Returns (images, bytes) deleted. A submit that reuses an image touches its
        created_at in its own transaction, so an image about to be needed is never taken.
        """
        needed = (
            select(Job.id)
            .where(
                Job.status.in_([Status.QUEUED, Status.RUNNING]),
                Job.image_ref == literal(STORED_PREFIX) + StoredImage.sha256,
            )
            .exists()
        )
        doomed = and_(StoredImage.created_at < before, ~needed)
        with self.engine.begin() as conn:
            size = conn.scalar(select(func.coalesce(func.sum(StoredImage.size), 0)).where(doomed))
            count = conn.execute(delete(StoredImage).where(doomed)).rowcount
        return count, int(size or 0) if count else 0

    def prune_jobs(self, before: datetime) -> int:
        """Delete succeeded and failed jobs completed before `before`; a count."""
        with self.engine.begin() as conn:
            return conn.execute(
                delete(Job).where(
                    Job.status.in_([Status.SUCCEEDED, Status.FAILED]), Job.completed_at < before
                )
            ).rowcount
