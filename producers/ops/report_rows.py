"""The report's job rows: scores extracted by the database, so no analysis JSON is parsed here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine, Select, select

from jobs.analysis import DIMENSIONS
from jobs.models import Job

_COLUMNS = (
    Job.id, Job.advisor, Job.variant, Job.reassigned_from, Job.assignment, Job.weights_version,
    Job.status, Job.started_at, Job.completed_at, Job.error_kind, Job.queue_wait_ms,
    Job.inference_ms, Job.output_tokens, Job.shadow_of,
)  # fmt: skip
# Only these parts of llm_outputs are read; the texts around them can be long.
_OVERALL = Job.llm_outputs["overall_score"].as_float().label("overall")
_DIMENSIONS = [
    column
    for i in range(len(DIMENSIONS))
    for column in (
        Job.llm_outputs[("dimensions", i, "name")].as_string().label(f"name{i}"),
        Job.llm_outputs[("dimensions", i, "score")].as_integer().label(f"score{i}"),
    )
]


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job as the report reads it; `overall` is None unless it has a stored analysis."""

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
    scores: tuple[tuple[str, int], ...]  # (dimension, score) in stored order

    def score_of(self, dimension: str) -> int | None:
        return next((s for name, s in self.scores if name == dimension), None)


def job_rows_query() -> Select[Any]:
    return cast("Select[Any]", select(*_COLUMNS, _OVERALL, *_DIMENSIONS))


def job_rows(engine: Engine, stmt: Select[Any]) -> list[JobRow]:
    """Runs a `job_rows_query()` (with its filters) and builds the rows."""
    with engine.connect() as conn:
        fetched: Sequence[Any] = conn.execute(stmt).all()
    first = len(_COLUMNS) + 1
    out = []
    for r in fetched:
        dims = r[first:]
        scores = tuple(
            (name, int(score))
            for name, score in zip(dims[::2], dims[1::2], strict=True)
            if name is not None and score is not None
        )
        out.append(
            JobRow(
                r.id, r.advisor, r.variant, r.reassigned_from, r.assignment, r.weights_version,
                r.status, r.started_at, r.completed_at, r.error_kind, r.queue_wait_ms,
                r.inference_ms, r.output_tokens, r.shadow_of, r.overall, scores,
            )
        )  # fmt: skip
    return out
