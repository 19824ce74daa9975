"""Worker heartbeats: one row per worker, who is alive and what it serves."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from jobs.clock import utcnow
from store.dialect import insert_for
from store.models import WorkerHeartbeat
from store.reading import Reader


class Heartbeats(Reader):
    """Heartbeat rows, upserted by each worker and read by the sweep and the report."""

    def beat(self, heartbeat: dict[str, Any]) -> None:
        """Upsert this worker's heartbeat row."""
        now = utcnow()
        values = {**heartbeat, "last_seen": now, "stopped_at": None}
        stmt = insert_for(self.engine, WorkerHeartbeat).values(started_at=now, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["worker"], set_=values)
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def mark_stopped(self, worker: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(WorkerHeartbeat)
                .where(WorkerHeartbeat.worker == worker)
                .values(stopped_at=utcnow(), current_job=None, slots_in_use=0)
            )

    def count_done(self, worker: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(WorkerHeartbeat)
                .where(WorkerHeartbeat.worker == worker)
                .values(jobs_done=WorkerHeartbeat.jobs_done + 1)
            )

    def live_workers(
        self, window_seconds: float, variant: str | None = None
    ) -> list[WorkerHeartbeat]:
        since = utcnow() - timedelta(seconds=window_seconds)
        stmt = select(WorkerHeartbeat).where(
            WorkerHeartbeat.last_seen >= since, WorkerHeartbeat.stopped_at.is_(None)
        )
        if variant is not None:
            stmt = stmt.where(WorkerHeartbeat.variant == variant)
        with self.engine.connect() as conn:
            return [WorkerHeartbeat(**r._mapping) for r in conn.execute(stmt)]

    def live_variants(self, window_seconds: float) -> set[str]:
        return {hb.variant for hb in self.live_workers(window_seconds)}

    def peak_memory_mb(self, since: datetime) -> dict[tuple[str, str], tuple[float, int]]:
        """(variant, base model) -> (the largest peak RSS its workers reported, in MB, and how
        many workers reported one), over workers seen since `since`, stopped ones included."""
        stmt = (
            select(WorkerHeartbeat.variant, WorkerHeartbeat.base_model,
                   func.max(WorkerHeartbeat.peak_rss_mb), func.count())
            .where(WorkerHeartbeat.last_seen >= since, WorkerHeartbeat.peak_rss_mb > 0)
            .group_by(WorkerHeartbeat.variant, WorkerHeartbeat.base_model)
        )  # fmt: skip
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return {(v, m): (float(peak), int(n)) for v, m, peak, n in rows if peak is not None}
