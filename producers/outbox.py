"""Job rows on their way to the broker: sent by the Publisher, the outcome written back."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from jobs.clock import as_utc, utcnow
from producers.errors import PublishFailed
from producers.publisher import Publisher, PublishResult
from store.models import Job
from store.repository import Repository

logger = logging.getLogger(__name__)

# A never-published row younger than this may still be mid-submit in another producer;
# republish leaves it alone so a healthy submit is not published twice.
REPUBLISH_GRACE_SECONDS = 30.0


class Outbox:
    """Publishes job rows and records on each whether the broker took it."""

    def __init__(self, repository: Repository, publisher: Publisher) -> None:
        self.repository = repository
        self.publisher = publisher

    def publish(self, jobs: Sequence[Job]) -> PublishResult:
        """The one publish path: send the jobs and record the outcome on their rows (published,
        or publish_error); submit, the sweep, drains and republish all come through here."""
        result = self.publisher.send(jobs)
        self.repository.mark_published(result.sent)
        if result.unsent:
            self.repository.mark_publish_failed(result.unsent, result.error or "not sent")
        return result

    def republish(self, limit: int = 500, *, grace: float = REPUBLISH_GRACE_SECONDS) -> int:
        """Send queued jobs that were never published (or were drained/handed back); a count."""
        cutoff = utcnow() - timedelta(seconds=grace)
        due = [
            job
            for job in self.repository.unpublished(limit)
            # attempts > 0: a worker already had it (re-queued), so no producer is mid-submit.
            if job.publish_attempts > 0
            or job.attempts > 0
            or (as_utc(job.queued_at) or cutoff) <= cutoff
        ]
        result = self.publish(due)
        if result.unsent:
            raise PublishFailed(
                f"Republished {len(result.sent)} of {len(due)} job(s); {result.error}"
            )
        if due:
            logger.info("Republished %d job(s)", len(due))
        return len(result.sent)
