"""Reading jobs and stored images: the base every lifecycle store builds on."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Engine,
    select,
)

from jobs.clock import as_utc
from jobs.errors import AmbiguousJobId, JobNotFound
from store.models import Job, StoredImage, detached

# A job id as typed: the full UUID, or a prefix of at least 8 hex digits (what lists print).
MIN_PREFIX_DIGITS = 8
_ID_PREFIX = re.compile(r"^[0-9a-f-]{8,35}$")
_ID_WIDTH = 36
_SHOWN_MATCHES = 5


class Reader:
    """One SQLAlchemy engine, and the reads every lifecycle needs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def image_bytes(self, sha256: str) -> bytes | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(StoredImage.data).where(StoredImage.sha256 == sha256))

    # -- reading -------------------------------------------------------------------

    def resolve_id(self, text: str) -> str:
        """The id of the one job whose id is `text` or starts with it (>= 8 hex digits).

        JobNotFound for none; AmbiguousJobId, naming the matches, for several.
        """
        if len(text) > _ID_WIDTH or not text.isprintable():
            # No stored id is longer or holds a control (PostgreSQL would refuse a NUL).
            raise JobNotFound(f"No job {text[:80]!r}")
        prefix = text.strip().lower()
        digits = sum(c != "-" for c in prefix)
        if not _ID_PREFIX.match(prefix) or digits < MIN_PREFIX_DIGITS:
            return text  # a full id, or not an id at all: get() says which
        with self.engine.connect() as conn:
            if conn.scalar(select(Job.id).where(Job.id == prefix)) is not None:
                return prefix
            # Ids are lowercase hex, so `prefix` holds no LIKE wildcard.
            matches = list(
                conn.scalars(
                    select(Job.id).where(Job.id.like(f"{prefix}%")).order_by(Job.id)
                    .limit(_SHOWN_MATCHES + 1)
                )
            )  # fmt: skip
        if not matches:
            raise JobNotFound(f"No job {text!r} (no job id starts with it)")
        if len(matches) > 1:
            shown = ", ".join(matches[:_SHOWN_MATCHES])
            more = " and more" if len(matches) > _SHOWN_MATCHES else ""
            raise AmbiguousJobId(
                f"Job id prefix {text!r} matches several jobs ({shown}{more}); give more digits"
            )
        return matches[0]

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
    return detached(Job, values)
