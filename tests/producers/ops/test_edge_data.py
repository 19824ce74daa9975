"""Edge data through the report, the guard and its replay (sequential.py's own edges are in
test_sequential.py): constant arms, one job per arm, values far from zero, non-finite scores."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import update

from jobs.clock import utcnow
from jobs.contracts import Assignment, Status
from producers.gateway.ops import finite
from producers.ops.exposure import RolloutState
from producers.ops.guard import Action, GuardThresholds, decide, evaluate
from producers.ops.guardrails import judged
from producers.ops.replay import replay
from producers.ops.report import Report, build_report
from producers.ops.report_text import render_report
from producers.ops.verdicts import Verdict
from producers.rollouts import RolloutStore
from store.db import engine_for
from store.models import Job, RolloutEvent
from store.scores import stored_scores
from tests.producers.crafted_jobs import Crafter

EVERY = timedelta(minutes=30)


def canary(url: str, start: datetime) -> tuple[Crafter, RolloutStore]:
    """A 10% canary whose exposure began at `start`."""
    crafter = Crafter(engine_for(url))
    store = RolloutStore(crafter.engine)
    store.set("ansel", {"base": 0.9, "fine_tuned": 0.1}, known_variants={"base", "fine_tuned"},
              actor="op", reason="canary")  # fmt: skip
    with crafter.engine.begin() as conn:
        conn.execute(update(RolloutEvent).values(created_at=start))
    return crafter, store


def finished(
    crafter: Crafter, start: datetime, per_arm: int, score: float | None, ms: int
) -> list[str]:
    """`per_arm` jobs an arm, alternating, one a minute from `start`; constant unless
    `score` is None (then seeded scores and times around 6 and `ms`)."""
    rng = random.Random(3)
    ids = []
    for _ in range(per_arm):
        for variant in ("base", "fine_tuned"):
            [job_id] = crafter.queue(1, variant=variant)
            if score is None:
                scores = [rng.randint(4, 8) for _ in range(7)]
                crafter.succeed(job_id, scores, inference_ms=ms + rng.randint(-3000, 3000))
            else:
                crafter.succeed(job_id, [int(score)] * 7, inference_ms=ms)
            crafter.set_times([job_id], completed_at=start + timedelta(minutes=1 + len(ids)))
            ids.append(job_id)
    return ids


def report_of(crafter: Crafter) -> Report:
    report = build_report(crafter.engine, days=1, advisor=None)
    # Whatever the data, the report's JSON is finite and its text renders (`advisor report`).
    json.dumps(finite(report.to_dict()), allow_nan=False)
    assert "ansel" in render_report(report)
    return report


def verdict_of(crafter: Crafter) -> Verdict:
    [verdict] = report_of(crafter).verdicts
    return verdict


def replayed_actions(crafter: Crafter, start: datetime) -> set[str]:
    rounds = replay(crafter.engine, "ansel", start=start, end=utcnow(), every=EVERY)
    assert rounds and all(r.p is None or 0 <= r.p <= 1 for r in rounds)
    return {r.action for r in rounds}


def test_constant_arms_give_no_difference_and_no_breach_in_the_report_guard_and_replay(
    migrated_url: str,
) -> None:
    start = (utcnow() - timedelta(hours=3)).replace(microsecond=0)
    crafter, store = canary(migrated_url, start)
    finished(crafter, start, 30, 7, 40_000)

    verdict = verdict_of(crafter)
    [decision] = evaluate(crafter.engine, store, "ansel")

    assert verdict.decision == "no significant difference" and verdict.guardrails_ok
    assert verdict.estimate == 0.0
    assert decision.action is Action.OK and not decision.breaches, decision.reason
    assert all(0 <= c.p <= 1 for c in decision.checks)
    assert replayed_actions(crafter, start) <= {"hold", "ok"}


def test_one_job_per_arm_is_no_verdict_and_no_breach(migrated_url: str) -> None:
    start = (utcnow() - timedelta(hours=3)).replace(microsecond=0)
    crafter, store = canary(migrated_url, start)
    finished(crafter, start, 1, None, 40_000)

    verdict = verdict_of(crafter)
    [decision] = evaluate(crafter.engine, store, "ansel")

    assert verdict.decision == "not enough data" and verdict.ci_low is None
    assert (verdict.n_variant, verdict.n_base) == (1, 1)
    assert decision.action is Action.OK and not decision.breaches, decision.reason
    assert replayed_actions(crafter, start) <= {"hold", "ok"}


def test_scores_offset_by_1e12_give_the_reports_verdict_of_the_same_scores_near_zero(
    migrated_url: str,
) -> None:
    start = (utcnow() - timedelta(hours=3)).replace(microsecond=0)
    crafter, _ = canary(migrated_url, start)
    finished(crafter, start, 40, None, 40_000)
    near = verdict_of(crafter)
    with crafter.engine.begin() as conn:
        conn.execute(update(Job).values(overall_score=Job.overall_score + 1e12))

    far = verdict_of(crafter)

    assert far.decision == near.decision == "no significant difference"
    assert far.p == pytest.approx(near.p, abs=1e-3)
    # Only the digits float64 cannot hold at 1e12 are lost (about 1e-4).
    assert far.estimate == pytest.approx(near.estimate, abs=1e-3)


def test_inference_times_offset_by_1e12_judge_like_the_same_times_near_zero() -> None:
    now = utcnow()
    rng = random.Random(9)
    times = [rng.gauss(40_000, 4_000) for _ in range(120)]

    def rows(offset: float) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(variant="fine_tuned" if i % 4 == 0 else "base",
                            status=Status.SUCCEEDED, error_kind=None,
                            assignment=Assignment.SPLIT, completed_at=now - timedelta(minutes=i),
                            inference_ms=t + offset)
            for i, t in enumerate(times)
        ]  # fmt: skip

    state = RolloutState({"base": 0.9, "fine_tuned": 0.1}, 1, {"fine_tuned": now - timedelta(1)})
    [near] = decide("ansel", judged(rows(0.0)), state, GuardThresholds(), now)
    # Times of 1e12 ms, equal up to 1e4 ms: the ratio is 1 and the guard sees no slowdown.
    [far] = decide("ansel", judged(rows(1e12)), state, GuardThresholds(), now)

    assert near.action is far.action is Action.OK, (near.reason, far.reason)
    [latency] = [c for c in far.checks if c.rule == "inference time vs base"]
    assert latency.variant_value == pytest.approx(1.0, abs=1e-6) and not latency.breached


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_stored_score_is_named_in_the_verdict_never_given_a_p_value(
    migrated_url: str, bad: float
) -> None:
    start = (utcnow() - timedelta(hours=3)).replace(microsecond=0)
    crafter, _ = canary(migrated_url, start)
    ids = finished(crafter, start, 30, None, 40_000)
    with crafter.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == ids[5]).values(overall_score=bad))

    verdict = verdict_of(crafter)

    if math.isnan(bad) and crafter.engine.dialect.name == "sqlite":
        # SQLite stores NaN as NULL: the row reads as an older worker's, from its analysis.
        assert verdict.decision == "no significant difference" and verdict.n_variant == 30
        return
    assert verdict.decision.startswith("invalid data: observations must be finite")
    assert verdict.estimate is None and verdict.ci_low is None and verdict.ci_high is None
    [candidate] = [v for v in report_of(crafter).variants if v.variant == "fine_tuned"]
    assert candidate.score.n == 30 and candidate.score.mean is None


@pytest.mark.parametrize("bad", [math.inf, math.nan, True, "7"])
def test_an_analysis_with_a_score_that_is_not_a_finite_number_stores_none(bad: object) -> None:
    stored = stored_scores({"overall_score": bad, "dimensions": [
        {"name": "Composition", "score": bad}, {"name": "Lighting", "score": 6},
    ]})  # fmt: skip
    assert stored == {"overall_score": None,
                      "dimension_scores": [None, 6, None, None, None, None, None]}  # fmt: skip
