"""The report's job rows: scores extracted by the database, so no analysis JSON is parsed here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import JSON, ColumnElement, Engine, Select, func, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB

from jobs.analysis import DIMENSIONS
from store.models import Job

_COLUMNS = (
    Job.id, Job.advisor, Job.variant, Job.reassigned_from, Job.assignment, Job.weights_version,
    Job.status, Job.started_at, Job.completed_at, Job.error_kind, Job.queue_wait_ms,
    Job.inference_ms, Job.output_tokens, Job.shadow_of,
)  # fmt: skip
# Only these parts of llm_outputs are read (the texts around them can be long), in one
# parse of the document per row: overall_score, then each dimension's name and score.
_PATHS: tuple[tuple[str | int, ...], ...] = (
    ("overall_score",),
    *((("dimensions", i, key)) for i in range(len(DIMENSIONS)) for key in ("name", "score")),
)


def _sqlite_paths() -> list[str]:
    return ["$" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in path)
            for path in _PATHS]  # fmt: skip


class JobRow(NamedTuple):
    """One job as the report reads it; `overall` is None unless it has a stored analysis.

    A named tuple: 10,000 of them are built per report, several times faster than a frozen
    dataclass."""

    id: str
    advisor: str
    variant: str
    reassigned_from: str | None
    assignment: str
    weights_version: int
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    error_kind: str | None
    queue_wait_ms: int | None
    inference_ms: int | None
    output_tokens: int | None
    shadow_of: str | None
    overall: float | None
    dimensions: tuple[Any, ...]  # name, score, name, score, ... in stored order (None: absent)
    scores: tuple[int, ...]  # the dimension scores present, in stored order

    def score_of(self, dimension: str) -> int | None:
        try:
            return cast(int | None, self.dimensions[self.dimensions.index(dimension) + 1])
        except ValueError:
            return None


def job_rows_query(dialect: str, *where: ColumnElement[bool]) -> Select[Any]:
    """The report's columns of the jobs matching `where`, for the engine's dialect."""
    if dialect == "sqlite":
        # json_extract with several paths parses the document once and returns a JSON array.
        extracted = func.json_extract(Job.llm_outputs, *_sqlite_paths(), type_=JSON)
        return cast("Select[Any]", select(*_COLUMNS, extracted.label("extracted")).where(*where))
    # PostgreSQL re-parses a json value at every operator: cast it to jsonb once, then index.
    # OFFSET 0 keeps the planner from inlining the cast into each of the 15 paths.
    inner = select(*_COLUMNS, sql_cast(Job.llm_outputs, JSONB).label("doc")).where(*where)
    rows = inner.offset(0).subquery()
    parts = [rows.c.doc[path] for path in _PATHS]
    built = func.jsonb_build_array(*parts, type_=JSON).label("extracted")
    columns = [rows.c[column.key] for column in _COLUMNS]
    return cast("Select[Any]", select(*columns, built))


def job_rows(engine: Engine, stmt: Select[Any]) -> list[JobRow]:
    """Runs a `job_rows_query()` (with its filters) and builds the rows."""
    with engine.connect() as conn:
        fetched: Sequence[Any] = conn.execute(stmt).all()
    out = []
    for r in fetched:
        parts = r.extracted or _NOTHING
        overall = float(parts[0]) if parts[0] is not None else None
        dims = tuple(parts[1:])
        scores = tuple(s for s in dims[1::2] if s is not None)
        out.append(
            JobRow(
                r.id, r.advisor, r.variant, r.reassigned_from, r.assignment, r.weights_version,
                r.status, r.started_at, r.completed_at, r.error_kind, r.queue_wait_ms,
                r.inference_ms, r.output_tokens, r.shadow_of, overall, dims, scores,
            )
        )  # fmt: skip
    return out


_NOTHING = (None,) * len(_PATHS)
