"""The report's job rows: scores read from their stored columns (store/scores.py); a row an
older worker finished without them has them extracted from its analysis by the database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    JSON,
    ColumnElement,
    Engine,
    Select,
    String,
    case,
    func,
    null,
    select,
    type_coerce,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB

from jobs.analysis import DIMENSIONS
from store.models import Job

_COLUMNS = (
    Job.id, Job.advisor, Job.variant, Job.reassigned_from, Job.assignment, Job.weights_version,
    Job.status, Job.error_kind, Job.queue_wait_ms, Job.inference_ms, Job.output_tokens,
    Job.shadow_of, Job.overall_score,
)  # fmt: skip
# The seven stored scores as integer columns: no JSON decoded per row in Python.
_SCORES = tuple(
    Job.dimension_scores[i].as_integer().label(f"score_{i}") for i in range(len(DIMENSIONS))
)
_TIMES = (Job.started_at, Job.completed_at)
# Rows without stored scores: only these parts of llm_outputs are read (the texts around them
# can be long), in one parse of the document per row: overall_score, then each dimension's
# name and score.
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
    dimension_names: tuple[str | None, ...]  # DIMENSIONS for stored scores
    dimension_scores: tuple[int | None, ...]  # beside their names (None: absent)
    scores: tuple[int, ...]  # the dimension scores present, in order

    def score_of(self, dimension: str) -> int | None:
        try:
            return self.dimension_scores[self.dimension_names.index(dimension)]
        except ValueError:
            return None


def overall_score() -> ColumnElement[Any]:
    """A job's overall_score: its stored column, else (an older worker's row) its analysis's."""
    return func.coalesce(Job.overall_score, Job.llm_outputs["overall_score"].as_float())


def job_rows_query(dialect: str, *where: ColumnElement[bool]) -> Select[Any]:
    """The report's columns of the jobs matching `where`, for the engine's dialect."""
    unscored = Job.overall_score.is_(None) & Job.llm_outputs.is_not(None)
    if dialect == "sqlite":
        # json_extract with several paths parses the document once and returns a JSON array.
        paths = func.json_extract(Job.llm_outputs, *_sqlite_paths(), type_=JSON)
        extracted = case((unscored, paths), else_=null()).label("extracted")
        # SQLite keeps times as ISO text: read it raw, job_rows() parses it in C.
        times = [type_coerce(c, String).label(c.key) for c in _TIMES]
        return cast("Select[Any]", select(*_COLUMNS, *times, *_SCORES, extracted).where(*where))
    # PostgreSQL re-parses a json value at every operator: cast it to jsonb once, then index.
    # OFFSET 0 keeps the planner from inlining the cast into each of the 15 paths.
    doc = case((unscored, sql_cast(Job.llm_outputs, JSONB)), else_=null())
    inner = (*_COLUMNS, *_TIMES, *_SCORES, doc.label("doc"))
    rows = select(*inner).where(*where).offset(0).subquery()
    parts = func.jsonb_build_array(*(rows.c.doc[path] for path in _PATHS), type_=JSON)
    built = case((rows.c.doc.is_not(None), parts), else_=null()).label("extracted")
    columns = [rows.c[column.key] for column in inner[:-1]]
    return cast("Select[Any]", select(*columns, built))


def job_rows(engine: Engine, stmt: Select[Any]) -> list[JobRow]:
    """Runs a `job_rows_query()` (with its filters) and builds the rows."""
    with engine.connect() as conn:
        fetched: Sequence[Any] = conn.execute(stmt).all()
    is_text = engine.dialect.name == "sqlite"
    out = []
    for r in fetched:
        started, completed = r.started_at, r.completed_at
        if is_text:
            # Stored as UTC without an offset: read aware, so no caller converts it per row.
            started = started and datetime.fromisoformat(started + _UTC)
            completed = completed and datetime.fromisoformat(completed + _UTC)
        if r.overall_score is not None:
            overall: float | None = r.overall_score
            names: tuple[str | None, ...] = DIMENSIONS
            found = r[_FIRST_SCORE : _FIRST_SCORE + len(DIMENSIONS)]
        else:
            parts = r.extracted or _NOTHING
            overall = float(parts[0]) if parts[0] is not None else None
            names, found = tuple(parts[1::2]), tuple(parts[2::2])
        scores = found if None not in found else tuple(s for s in found if s is not None)
        out.append(
            JobRow(
                r.id, r.advisor, r.variant, r.reassigned_from, r.assignment, r.weights_version,
                r.status, started, completed, r.error_kind, r.queue_wait_ms,
                r.inference_ms, r.output_tokens, r.shadow_of, overall, names, found, scores,
            )
        )  # fmt: skip
    return out


_NOTHING = (None,) * len(_PATHS)
_FIRST_SCORE = len(_COLUMNS) + len(_TIMES)
_UTC = "+00:00"
