"""The report's job rows: scores extracted by the database, so no analysis JSON is parsed here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import JSON, ColumnElement, Engine, Select, func, select

from jobs.analysis import DIMENSIONS
from jobs.models import Job

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


def _extracted(dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":
        # json_extract with several paths parses once and returns a JSON array.
        paths = ["$." + ".".join(f"{p}" if isinstance(p, str) else f"[{p}]" for p in path)
                 for path in _PATHS]  # fmt: skip
        paths = [p.replace(".[", "[") for p in paths]
        return func.json_extract(Job.llm_outputs, *paths, type_=JSON).label("extracted")
    parts = [Job.llm_outputs[path] for path in _PATHS]
    return func.json_build_array(*parts, type_=JSON).label("extracted")


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


def job_rows_query(dialect: str) -> Select[Any]:
    """The report's columns for the engine's dialect ("sqlite" or "postgresql")."""
    return cast("Select[Any]", select(*_COLUMNS, _extracted(dialect)))


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
