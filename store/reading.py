"""Reading jobs and stored images: the base every lifecycle store builds on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Engine,
    select,
)

from jobs.clock import as_utc
from jobs.errors import JobNotFound
from store.models import Job, StoredImage


class Reader:
    """One SQLAlchemy engine, and the reads every lifecycle needs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def image_bytes(self, sha256: str) -> bytes | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(StoredImage.data).where(StoredImage.sha256 == sha256))

    # -- reading -------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        with self.engine.connect() as conn:
            row = conn.execute(select(Job).where(Job.id == job_id)).first()
        if row is None:
            raise JobNotFound(f"No job {job_id!r}")
        return job_from_row(row)

    def find(self, *criteria: Any, limit: int | None = None) -> list[Job]:
        stmt = select(Job).where(*criteria).order_by(Job.queued_at)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [job_from_row(r) for r in conn.execute(stmt)]


def job_from_row(row: Any) -> Job:
    values = {k: as_utc(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()}
    return Job(**values)
