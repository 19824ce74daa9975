"""The A/B report over the jobs table: verdicts, per-variant outcomes, feedback, shadow pairs,
score statistics and data checks."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from jobs.analysis import DIMENSIONS
from jobs.clock import utcnow
from jobs.contracts import BASE_VARIANT, Assignment, ErrorKind, ModelUsed, Status
from producers.ops.evidence import Known, exposure_verdicts
from producers.ops.report_rows import JobRow, job_rows, job_rows_query, overall_score
from producers.ops.srm import SrmCheck, srm_checks
from producers.ops.stats import (
    Comparison,
    ScoreCopy,
    ScoreSummary,
    compare_scores,
    score_copy,
    summarise,
)
from producers.ops.verdicts import (
    FeedbackSummary,
    PairedComparison,
    Verdict,
    feedback_summaries,
    paired_comparisons,
    verdict_arms,
    verdicts,
)
from store.models import Feedback, Job

logger = logging.getLogger(__name__)

ModelPerformance = tuple[str, int, float | None, float | None]


@dataclass(frozen=True)
class Spread:
    n: int
    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class VariantStats:
    variant: str
    routed: int
    started: int
    finished: int  # succeeded
    in_flight: int  # still queued or running
    cancelled: int  # by their submitter: neither finished nor failed
    failed: dict[str, int]  # by error_kind
    failure_rate: float | None  # failed / (succeeded + failed)
    invalid_output_rate: float | None  # invalid_output failures / (succeeded + failed)
    score: ScoreSummary
    dimension_means: dict[str, float]
    queue_wait_ms: Spread
    inference_ms: Spread
    tokens_per_second: float | None  # sum(output_tokens) / sum(inference seconds), succeeded
    shadow_jobs: int = 0  # shadow jobs run on this variant (not in any number above)
    shadow_succeeded: int = 0


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    since: datetime
    days: float
    advisor: str | None
    total_jobs: int  # primary jobs (shadow jobs are counted per variant)
    verdicts: tuple[Verdict, ...]
    variants: tuple[VariantStats, ...]
    feedback: tuple[FeedbackSummary, ...]
    paired: tuple[PairedComparison, ...]
    comparisons: tuple[Comparison, ...]
    srm: tuple[SrmCheck, ...]
    score_copy: tuple[ScoreCopy, ...]
    model_performance: tuple[ModelPerformance, ...]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def build_report(
    engine: Engine, *, days: float, advisor: str | None, now: datetime | None = None
) -> Report:
    """Everything over jobs queued in the last `days` (optionally one advisor's)."""
    now = now or utcnow()
    since = now - timedelta(days=days)
    where = [Job.queued_at >= since, Job.queued_at <= now]
    if advisor is not None:
        where.append(Job.advisor == advisor)
    stmt = job_rows_query(engine.dialect.name, *where)
    rated = (
        select(Feedback.job_id, Feedback.rating, Feedback.helpful, Feedback.simulated,
               Feedback.created_at)
        .join(Job, Job.id == Feedback.job_id)
        .where(Job.queued_at >= since, Job.queued_at <= now)
        .order_by(Feedback.created_at)
    )  # fmt: skip
    if advisor is not None:
        rated = rated.where(Job.advisor == advisor)
    every = job_rows(engine, stmt)
    with engine.connect() as conn:
        feedback = conn.execute(rated).all()
    logger.debug("report over %d jobs since %s", len(every), since)
    rows = [r for r in every if r.shadow_of is None]
    shadows: dict[str, list[Any]] = defaultdict(list)
    for r in every:
        if r.shadow_of is not None:
            shadows[r.variant].append(r)
    by_variant: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_variant[row.variant].append(row)
    names = _ordered(set(by_variant) | set(shadows))
    variants = tuple(_variant_stats(v, by_variant[v], shadows[v]) for v in names)
    succeeded = [r for r in rows if r.status == Status.SUCCEEDED and r.overall is not None]
    copies = [score_copy("all", [_score_tuple(r) for r in succeeded])]
    copies += [
        score_copy(v, [_score_tuple(r) for r in succeeded if r.variant == v])
        for v in _ordered(by_variant)
    ]
    return Report(
        generated_at=now,
        since=since,
        days=days,
        advisor=advisor,
        total_jobs=len(rows),
        verdicts=tuple(_verdicts(engine, Known(since, every, feedback), advisor, now)),
        variants=variants,
        feedback=tuple(feedback_summaries(rows, feedback, names)),
        paired=tuple(paired_comparisons(every)),
        comparisons=tuple(_comparisons(rows)),
        srm=tuple(srm_checks(engine, rows)),
        score_copy=tuple(copies),
        model_performance=tuple(compare_model_performance(engine, days=days, now=now)),
    )


def _verdicts(engine: Engine, known: Known, advisor: str | None, now: datetime) -> list[Verdict]:
    """The window's verdicts, except that an exposed candidate is judged on its exposure
    (producers/ops/evidence.py), as the guard and its plan judge it."""
    arms = verdict_arms(known.rows)
    advisors = {name for name, _ in arms} | ({advisor} if advisor is not None else set())
    exposed = {
        (name, variant): verdict
        for name in sorted(advisors)
        for variant, verdict in exposure_verdicts(engine, name, now, known).items()
    }
    # An exposed arm's window verdict would be replaced: it is not computed.
    window = {(v.advisor, v.variant): v for v in verdicts(known.rows, known.feedback, skip=exposed)}
    shown = [exposed.pop(key) if key in exposed else window[key] for key in arms]
    return shown + [exposed[key] for key in sorted(exposed)]


def _ordered(variants: Iterable[str]) -> list[str]:
    return sorted(variants, key=lambda v: (v != BASE_VARIANT, v))


def _variant_stats(variant: str, rows: Sequence[Any], shadows: Sequence[Any]) -> VariantStats:
    ok = [r for r in rows if r.status == Status.SUCCEEDED]
    failed_rows = [r for r in rows if r.status == Status.FAILED]
    failed: dict[str, int] = defaultdict(int)
    for r in failed_rows:
        failed[r.error_kind or "unknown"] += 1
    completed = len(ok) + len(failed_rows)
    scored = [r for r in ok if r.overall is not None]
    dims: dict[str, list[int]] = defaultdict(list)
    for r in scored:
        for name, score in zip(r.dimension_names, r.dimension_scores, strict=True):
            if name is not None and score is not None:
                dims[name].append(score)
    timed = [r for r in ok if r.inference_ms and r.output_tokens is not None]
    infer_s = sum(r.inference_ms for r in timed) / 1000
    return VariantStats(
        variant=variant,
        routed=len(rows),
        started=sum(1 for r in rows if r.started_at is not None),
        finished=len(ok),
        in_flight=sum(1 for r in rows if r.status in (Status.QUEUED, Status.RUNNING)),
        cancelled=sum(1 for r in rows if r.status == Status.CANCELLED),
        failed=dict(sorted(failed.items())),
        failure_rate=len(failed_rows) / completed if completed else None,
        invalid_output_rate=failed.get(ErrorKind.INVALID_OUTPUT, 0) / completed
        if completed
        else None,
        score=summarise([r.overall for r in scored]),
        dimension_means={n: float(np.mean(dims[n])) for n in DIMENSIONS if dims[n]},
        queue_wait_ms=_spread([r.queue_wait_ms for r in rows]),
        inference_ms=_spread([r.inference_ms for r in ok]),
        tokens_per_second=sum(r.output_tokens for r in timed) / infer_s if infer_s else None,
        shadow_jobs=len(shadows),
        shadow_succeeded=sum(1 for r in shadows if r.status == Status.SUCCEEDED),
    )


def _spread(values: Iterable[int | None]) -> Spread:
    present = [v for v in values if v is not None]
    if not present:
        return Spread(0, None, None)
    p50, p95 = np.percentile(present, [50, 95])
    return Spread(len(present), float(p50), float(p95))


def _score_tuple(row: JobRow) -> tuple[int, ...]:
    return row.scores


def _comparisons(rows: Sequence[Any]) -> list[Comparison]:
    # Only split traffic is randomised, and per advisor, so arms differ only by the variant.
    scored: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        if (
            r.assignment == Assignment.SPLIT
            and r.status == Status.SUCCEEDED
            and r.overall is not None
        ):
            scored[r.advisor].append(r)
    out = []
    for advisor in sorted(scored):
        done = sorted(scored[advisor], key=lambda r: r.completed_at)
        for variant in sorted({r.variant for r in done} - {BASE_VARIANT}):
            stream = [(r.variant == variant, float(r.overall))
                      for r in done if r.variant in (variant, BASE_VARIANT)]  # fmt: skip
            out.append(compare_scores(advisor, variant, stream))
    return out


def compare_model_performance(
    engine: Engine, days: float = 7, *, now: datetime | None = None
) -> list[ModelPerformance]:
    """The seed's query: per model_used, jobs completed in the last `days`, their average
    overall_score and average (completed_at - started_at) in seconds; shadow jobs left out."""
    now = now or utcnow()
    if engine.dialect.name == "sqlite":
        duration = (func.julianday(Job.completed_at) - func.julianday(Job.started_at)) * 86400.0
    else:
        duration = func.extract("epoch", Job.completed_at - Job.started_at)
    stmt = (
        select(
            Job.model_used,
            func.count(),
            func.avg(overall_score()),
            func.avg(duration),
        )
        .where(
            Job.model_used.in_([m.value for m in ModelUsed]),
            Job.shadow_of.is_(None),
            Job.completed_at > now - timedelta(days=days),
            Job.completed_at <= now,
        )
        .group_by(Job.model_used)
        .order_by(Job.model_used)
    )
    with engine.connect() as conn:
        return [
            (m, int(n), _float(score), _float(secs)) for m, n, score, secs in conn.execute(stmt)
        ]


def _float(value: Any) -> float | None:
    # PostgreSQL's extract() returns numeric (Decimal).
    return None if value is None else float(value)
