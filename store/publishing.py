"""Publishing: which queued jobs have their broker message out, and drains between variants."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import (
    case,
    func,
    select,
    update,
)

from jobs.clock import utcnow
from jobs.contracts import (
    Assignment,
    Status,
    model_used_for,
)
from store.dialect import no_wait_for_disk, storable
from store.models import Job
from store.reading import Reader


class Publishing(Reader):
    """The outbox side of a job row: published, failed to publish, or moved to another variant."""

    def mark_published(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        if not ids:
            return
        now = utcnow()
        is_queued = Job.status == Status.QUEUED
        with self.engine.begin() as conn:
            no_wait_for_disk(conn)
            # Whatever the status: a fast worker may have started (or finished) the job before
            # this runs, and the row must still say that its message went out.
            conn.execute(
                update(Job)
                .where(Job.id.in_(ids))
                .values(
                    published_at=case((is_queued, now), else_=func.coalesce(Job.published_at, now)),
                    publish_error=case((is_queued, None), else_=Job.publish_error),
                    publish_attempts=Job.publish_attempts + 1,
                )
            )

    def mark_publish_failed(self, job_ids: Iterable[str], error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(Job)
                .where(Job.id.in_(list(job_ids)), Job.status == Status.QUEUED)
                .values(
                    publish_error=storable(error[:2000]), publish_attempts=Job.publish_attempts + 1
                )
            )

    def unpublished(self, limit: int = 500) -> list[Job]:
        return self.find(Job.status == Status.QUEUED, Job.published_at.is_(None), limit=limit)

    def reassign_queued(
        self,
        job_ids: Sequence[str],
        variant: str,
        reason: str,
        *,
        weights: Mapping[str, float],
        base_model: str | None = None,
    ) -> list[str]:
        """Move not-yet-started jobs to `variant` (a drain); returns the ids actually moved.

        `weights` is the advisor's split they now fall under; `model_used` follows it as it
        would for a job routed now (see model_used_for).
        """
        moved: list[str] = []
        with self.engine.begin() as conn:
            for job_id in job_ids:
                row = conn.execute(
                    select(Job.variant, Job.assignment).where(Job.id == job_id)
                ).first()
                if row is None or row.variant == variant:
                    continue
                res = conn.execute(
                    update(Job)
                    .where(
                        Job.id == job_id, Job.status == Status.QUEUED, Job.variant == row.variant
                    )
                    .values(
                        variant=variant,
                        model_used=model_used_for(
                            variant, Assignment(row.assignment), weights
                        ).value,
                        reassigned_from=row.variant,
                        reassigned_reason=reason,
                        adapter_fingerprint=None,
                        base_model=base_model,
                        published_at=None,
                    )
                )
                if res.rowcount == 1:
                    moved.append(job_id)
        return moved
