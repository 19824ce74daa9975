"""The dashboard: an HTML page (static, Chart.js vendored) and the JSON it refreshes from."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from sqlalchemy import select

from jobs.clock import as_utc, utcnow
from jobs.contracts import Status
from producers.gateway.auth import ReaderDep
from producers.gateway.ops import finite
from producers.gateway.schemas import error_responses
from producers.gateway.service import Gateway, GatewayDep
from producers.gateway.status import health
from producers.ops.report import build_report
from producers.ops.report_rows import overall_score
from producers.plans import Plan
from store.models import Job, RolloutEvent

STATIC_DIR = Path(__file__).parent / "static"
SCORE_BINS = [str(n) for n in range(1, 11)]  # bin k holds overall scores in [k, k+1); 10 is 10
MAX_TIMING_POINTS = 500
TIMELINE_EVENTS = 30  # per advisor, newest first

router = APIRouter(tags=["dashboard"])


def _score_bin(score: float) -> int:
    return min(10, max(1, math.floor(score))) - 1


def _event(event: RolloutEvent) -> dict[str, Any]:
    """One line of an advisor's rollout timeline: what changed, who, why, on what evidence."""
    details = event.details or {}
    stats = details.get("statistics") or {}
    at = as_utc(event.created_at)
    return {
        "at": at.isoformat() if at else None, "kind": event.kind, "version": event.version,
        "actor": event.actor, "reason": event.reason, "weights": event.new_weights,
        "old_weights": event.old_weights, "percent": details.get("percent"),
        "action": details.get("action"), "variant": details.get("variant"),
        "metric": stats.get("metric"), "estimate": stats.get("estimate"),
        "ci_low": stats.get("ci_low"), "ci_high": stats.get("ci_high"),
    }  # fmt: skip


def _plan(plan: Plan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    return {
        "variant": plan.variant, "status": plan.status.value, "steps": list(plan.steps),
        "step": plan.step, "percent": plan.percent, "state": plan.state,
        "workers": plan.details.get("workers"),
    }  # fmt: skip


def dashboard_data(gateway: Gateway, hours: float) -> dict[str, Any]:
    """Split, queues and workers, and the series the charts draw, over the last `hours`."""
    now = utcnow()
    since = now - timedelta(hours=hours)
    state = health(gateway)
    shown = gateway.rollouts.show()
    split = [
        {"advisor": r.weights.advisor, "weights": dict(r.weights.weights),
         "version": r.weights.version, "variants": r.variants, "live": r.live_variants}
        for r in shown
    ]  # fmt: skip
    stmt = (
        select(Job.variant, Job.completed_at, Job.inference_ms, overall_score())
        .where(Job.status == Status.SUCCEEDED, Job.completed_at >= since)
        .order_by(Job.completed_at.desc())
        .limit(MAX_TIMING_POINTS)
    )
    with gateway.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    scores: dict[str, list[int]] = defaultdict(lambda: [0] * len(SCORE_BINS))
    timing: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for variant, completed_at, inference_ms, overall in reversed(rows):
        if overall is not None:
            scores[variant][_score_bin(float(overall))] += 1
        done = as_utc(completed_at)
        if inference_ms is not None and done is not None:
            timing[variant].append(
                {"at": done.isoformat(), "seconds": inference_ms / 1000}
            )  # fmt: skip
    report = build_report(gateway.engine, days=hours / 24, advisor=None, now=now)
    rolled = [r.weights.advisor for r in shown if r.weights.version > 0]
    plans = {a: _plan(gateway.plans.plans.latest(a)) for a in rolled}
    timeline = {
        a: [_event(e) for e in gateway.plans.rollouts.history(a, limit=TIMELINE_EVENTS)]
        for a in rolled
    }
    failures = [
        {"variant": v.variant, "succeeded": v.finished, "failed": sum(v.failed.values()),
         "in_flight": v.in_flight, "failure_rate": v.failure_rate, "by_kind": v.failed}
        for v in report.variants
    ]  # fmt: skip
    verdicts = [
        {"advisor": v.advisor, "variant": v.variant, "metric": v.metric, "method": v.method,
         "estimate": v.estimate, "ci_low": v.ci_low, "ci_high": v.ci_high, "p": v.p,
         "decision": v.decision, "guardrails_ok": v.guardrails_ok, "n_variant": v.n_variant,
         "n_base": v.n_base, "plan": _plan_of(plans, v.advisor, v.variant)}
        for v in report.verdicts
    ]  # fmt: skip
    feedback = [
        {"variant": f.variant, "ratings": f.ratings, "simulated": f.simulated,
         "mean_rating": f.rating.mean, "ci_low": f.rating.ci_low, "ci_high": f.rating.ci_high,
         "helpful_rate": f.helpful_rate}
        for f in report.feedback
    ]  # fmt: skip
    paired = [
        {"advisor": p.advisor, "variant": p.variant, "pairs": p.pairs,
         "mean_difference": p.overall.mean_difference,
         "sequence_low": p.overall.sequence_low, "sequence_high": p.overall.sequence_high,
         "sequential_p": p.overall.sequential_p,
         "candidate_higher": p.overall.candidate_higher,
         # Fixed-horizon figures: shown as such, never as a second verdict.
         "descriptive": asdict(p.overall.descriptive)}
        for p in report.paired
    ]  # fmt: skip
    return finite(
        {
            "generated_at": now.isoformat(),
            "verdicts": verdicts,
            "plans": plans,
            "timeline": timeline,
            "feedback": feedback,
            "paired": paired,
            "hours": hours,
            "health": state.model_dump(mode="json"),
            "split": split,
            "scores": {"bins": SCORE_BINS, "variants": dict(scores)},
            "inference": dict(timing),
            "failures": failures,
        }
    )


def _plan_of(
    plans: dict[str, dict[str, Any] | None], advisor: str, variant: str
) -> dict[str, Any] | None:
    plan = plans.get(advisor)
    return plan if plan is not None and plan["variant"] == variant else None


@router.get("/dashboard", response_class=FileResponse, include_in_schema=False)
def get_dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html")


@router.get("/dashboard/data", responses=error_responses(401, 403, 422, 503))
def get_dashboard_data(
    gateway: GatewayDep,
    _caller: ReaderDep,
    hours: float = Query(default=24.0, gt=0, le=24 * 90, description="window in hours"),
) -> dict[str, Any]:
    """What the dashboard page draws; it fetches this every few seconds."""
    return dashboard_data(gateway, hours)
