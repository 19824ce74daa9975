"""The A/B report: statistics agree with scipy on the same rows, SRM and score-copy checks bite."""

from __future__ import annotations

import json
import math
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sqlalchemy import func, select, update

from jobs.analysis import DIMENSIONS
from jobs.clock import utcnow
from jobs.contracts import Assignment, ErrorKind
from jobs.settings import get_settings
from producers import cli
from producers.feedback import FeedbackStore, FeedbackValues
from producers.ops.report import build_report, compare_model_performance
from producers.ops.report_text import render_report
from producers.ops.sequential import MEANS_METHOD, MIN_PAIRS, PAIRED_METHOD
from producers.ops.stats import compare_scores
from producers.ops.verdicts import wilcoxon_p
from store.db import engine_for
from store.models import Job
from tests.producers.crafted_jobs import Crafter, set_weights


def scores_around(rng: random.Random, centre: float) -> list[int]:
    return [min(10, max(1, round(rng.gauss(centre, 1.3)))) for _ in DIMENSIONS]


def test_cancelled_jobs_are_counted_apart_from_finished_and_failed_ones(sqlite_db: str) -> None:
    crafter = Crafter(engine_for(sqlite_db))
    ids = crafter.queue(6)
    crafter.succeed(ids[0])
    crafter.fail(ids[1], ErrorKind.TIMEOUT)
    crafter.cancel(ids[2])
    crafter.cancel(ids[3], started=False)
    crafter.start(ids[4])

    [base] = build_report(crafter.engine, days=1, advisor=None).variants

    assert (base.routed, base.finished, base.in_flight, base.cancelled) == (6, 1, 2, 2)
    assert base.failed == {"timeout": 1} and base.failure_rate == 0.5
    lines = render_report(build_report(crafter.engine, days=1, advisor=None)).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("variant "))
    assert lines[header].split()[5] == "cancel" and lines[header + 1].split()[5] == "2"


def test_report_statistics_match_scipy_computed_on_the_same_rows(migrated_url: str) -> None:
    crafter = Crafter(engine_for(migrated_url))
    rng = random.Random(11)
    split: dict[str, list[float]] = {"base": [], "fine_tuned": []}
    dims: dict[str, list[list[int]]] = {"base": [], "fine_tuned": []}
    times: dict[str, list[int]] = {"base": [], "fine_tuned": []}
    tokens: dict[str, list[int]] = {"base": [], "fine_tuned": []}
    for variant, n, centre in (("base", 24, 6.0), ("fine_tuned", 26, 7.2)):
        ids = crafter.queue(n + 3, variant=variant)
        for job_id in ids[:n]:
            scores = scores_around(rng, centre)
            ms, toks = rng.randint(20_000, 90_000), rng.randint(600, 1000)
            crafter.succeed(job_id, scores, inference_ms=ms, output_tokens=toks)
            split[variant].append(round(sum(scores) / len(scores), 2))
            dims[variant].append(scores)
            times[variant].append(ms)
            tokens[variant].append(toks)
        crafter.fail(ids[n], ErrorKind.INVALID_OUTPUT)
        crafter.fail(ids[n + 1], ErrorKind.TIMEOUT)
    # A forced job counts in the variant's own numbers but never in the randomised comparison.
    [forced] = crafter.queue(1, variant="fine_tuned", assignment=Assignment.FORCED)
    crafter.succeed(forced, [1] * 7, inference_ms=10_000, output_tokens=100)

    report = build_report(crafter.engine, days=1, advisor=None)

    by_name = {v.variant: v for v in report.variants}
    assert [v.variant for v in report.variants] == ["base", "fine_tuned"]
    base, ft = by_name["base"], by_name["fine_tuned"]
    assert (base.routed, base.started, base.finished, base.in_flight) == (27, 26, 24, 1)
    assert (ft.routed, ft.started, ft.finished, ft.in_flight) == (30, 29, 27, 1)
    assert ft.failed == {"invalid_output": 1, "timeout": 1}
    assert ft.invalid_output_rate == pytest.approx(1 / 29)
    assert ft.failure_rate == pytest.approx(2 / 29)

    ft_all = [*split["fine_tuned"], 1.0]
    mean, sem = np.mean(ft_all), stats.sem(ft_all)
    low, high = stats.t.interval(0.95, len(ft_all) - 1, loc=mean, scale=sem)
    assert ft.score.n == 27
    assert (ft.score.mean, ft.score.ci_low, ft.score.ci_high) == pytest.approx((mean, low, high))
    for i, name in enumerate(DIMENSIONS):
        expected = np.mean([s[i] for s in dims["base"]])
        assert base.dimension_means[name] == pytest.approx(expected)
    assert (base.inference_ms.p50, base.inference_ms.p95) == pytest.approx(
        tuple(np.percentile(times["base"], [50, 95]))
    )
    assert base.tokens_per_second == pytest.approx(
        sum(tokens["base"]) / (sum(times["base"]) / 1000)
    )

    [comparison] = report.comparisons
    welch = stats.ttest_ind(split["fine_tuned"], split["base"], equal_var=False)
    assert (comparison.n_variant, comparison.n_base) == (26, 24)
    assert comparison.difference == pytest.approx(
        np.mean(split["fine_tuned"]) - np.mean(split["base"])
    )
    described = comparison.descriptive
    assert (described.t, described.p) == pytest.approx((welch.statistic, welch.pvalue))
    assert welch.pvalue < 0.05 and comparison.verdict == "fine_tuned better"
    ci = welch.confidence_interval(0.95)
    assert (described.ci_low, described.ci_high) == pytest.approx((ci.low, ci.high))

    assert comparison.sequential_p is not None and comparison.sequential_p <= 0.05
    [verdict] = report.verdicts
    assert (verdict.metric, verdict.method) == ("overall_score", MEANS_METHOD)
    assert verdict.decision == "fine_tuned better" and verdict.p == comparison.sequential_p
    assert (verdict.n_variant, verdict.n_base) == (26, 24)

    text = render_report(report)
    assert "fine_tuned better" in text and "Sample ratio" in text and "Score copy" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["comparisons"][0]["verdict"] == "fine_tuned better"
    assert data["verdicts"][0]["method"] == MEANS_METHOD
    assert data["comparisons"][0]["descriptive"]["p"] == pytest.approx(welch.pvalue)
    assert data["verdicts"][0]["metric"] == "overall_score"


def stream(variant: list[float], base: list[float]) -> list[tuple[bool, float]]:
    """Interleaved, as jobs of a 50/50 split finish."""
    out = [(True, v) for v in variant] + [(False, b) for b in base]
    order = np.random.default_rng(0).permutation(len(out))
    return [out[i] for i in order]


def test_verdicts_say_not_enough_data_no_difference_or_worse() -> None:
    rng = np.random.default_rng(3)
    base = list(rng.normal(6.5, 1.0, 40))
    assert compare_scores("a", "ft", stream(base[:1], base)).verdict == "not enough data"
    # Below the minimum per arm, even a large difference is not yet a verdict.
    few = compare_scores("a", "ft", stream([s + 3 for s in base[:19]], base))
    assert few.verdict == "not enough data" and few.descriptive.p is None
    same = compare_scores("a", "ft", stream(list(rng.normal(6.5, 1.0, 40)), base))
    assert same.verdict == "no significant difference"
    assert same.sequential_p is not None and same.sequential_p > 0.05
    lower = compare_scores("a", "ft", stream([s - 1.5 for s in base], base))
    assert lower.verdict == "ft worse" and lower.method == MEANS_METHOD
    # The confidence sequence is wider than Welch's interval, read once.
    assert lower.sequence_low is not None and lower.descriptive.ci_low is not None
    assert lower.sequence_low < lower.descriptive.ci_low
    no_spread = compare_scores("a", "ft", stream([7.0] * 25, [7.0] * 25))
    assert no_spread.verdict == "no significant difference" and no_spread.descriptive.p is None
    # A/A far from zero reads like A/A near it (no cancellation in the sums).
    far = compare_scores("a", "ft", stream([s + 1e12 for s in base[:30]], [s + 1e12 for s in base]))
    near = compare_scores("a", "ft", stream(base[:30], base))
    assert far.verdict == near.verdict == "no significant difference"
    assert far.sequential_p == pytest.approx(near.sequential_p, abs=1e-3)
    nan = compare_scores("a", "ft", stream([7.0, math.nan] * 15, base))
    assert nan.verdict.startswith("invalid data: observations must be finite")
    assert nan.sequential_p is None


def test_compare_model_performance_matches_hand_computed_values(migrated_url: str) -> None:
    crafter = Crafter(engine_for(migrated_url))
    now = utcnow()
    a, b, c = crafter.queue(3, variant="base")
    crafter.succeed(a, [5] * 7)
    crafter.succeed(b, [7] * 7)
    crafter.fail(c, ErrorKind.TIMEOUT)
    start = now - timedelta(minutes=5)
    for job_id, seconds in ((a, 10), (b, 30), (c, 2)):
        crafter.set_times(
            [job_id], started_at=start, completed_at=start + timedelta(seconds=seconds)
        )
    [forced] = crafter.queue(1, variant="fine_tuned", assignment=Assignment.FORCED)
    crafter.succeed(forced, [8] * 7)
    crafter.set_times(
        [forced], started_at=now - timedelta(seconds=50), completed_at=now - timedelta(seconds=10)
    )
    [old] = crafter.queue(1, variant="fine_tuned")
    crafter.succeed(old, [9] * 7)
    crafter.set_times([old], completed_at=now - timedelta(days=10))
    crafter.queue(1, variant="base", assignment=Assignment.FALLBACK)  # never completed

    rows = compare_model_performance(crafter.engine, days=7)

    assert [(m, n) for m, n, _, _ in rows] == [("ab_test_base", 3), ("fine_tuned", 1)]
    assert rows[0][2:] == pytest.approx((6.0, 14.0), abs=1e-3)
    assert rows[1][2:] == pytest.approx((8.0, 40.0), abs=1e-3)


def test_report_command_prints_json_and_fails_in_one_line_without_a_database(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ADVISOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ADVISOR_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    try:
        assert cli.main(["report", "--json"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "run `advisor db upgrade`" in err

        from store import migrate

        migrate.upgrade(sqlite_url)
        assert cli.main(["report", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["total_jobs"] == 0
    finally:
        get_settings.cache_clear()  # the next test reads its own environment


def paired_jobs(crafter: Crafter, rng: random.Random, n: int, lift: float) -> list[float]:
    """n split jobs on base, each with a shadow on fine_tuned scoring `lift` higher on average;
    returns the overall_score differences (fine_tuned - base)."""
    diffs = []
    primaries = crafter.queue(n, variant="base")
    shadows = crafter.queue(n, variant="fine_tuned", assignment=Assignment.SHADOW)
    for primary, shadow in zip(primaries, shadows, strict=True):
        base_scores = scores_around(rng, 5.0)
        ft_scores = [min(10, max(1, s + round(rng.gauss(lift, 1.0)))) for s in base_scores]
        crafter.succeed(primary, base_scores)
        crafter.succeed(shadow, ft_scores)
        crafter.set_times([shadow], shadow_of=primary)  # type: ignore[arg-type]
        diffs.append(round(sum(ft_scores) / 7, 2) - round(sum(base_scores) / 7, 2))
    return diffs


def test_paired_shadow_runs_match_scipy_and_decide_without_enough_ratings(
    migrated_url: str,
) -> None:
    crafter = Crafter(engine_for(migrated_url))
    version = set_weights(migrated_url, "ansel", {"base": 0.5, "fine_tuned": 0.5})
    rng = random.Random(5)
    diffs = paired_jobs(crafter, rng, 14, lift=1.0)

    report = build_report(crafter.engine, days=1, advisor="ansel")

    [paired] = report.paired
    assert (paired.advisor, paired.variant, paired.pairs) == ("ansel", "fine_tuned", 14)
    overall = paired.overall
    ci = stats.ttest_rel(np.array(diffs), np.zeros(14)).confidence_interval(0.95)
    assert overall.mean_difference == pytest.approx(np.mean(diffs))
    described = overall.descriptive
    assert (described.paired_t_low, described.paired_t_high) == pytest.approx((ci.low, ci.high))
    assert described.wilcoxon_p == pytest.approx(
        stats.wilcoxon(diffs, method=described.wilcoxon_method).pvalue
    )
    assert described.wilcoxon_p is not None and described.wilcoxon_p < 0.05
    assert overall.candidate_higher == pytest.approx(np.mean(np.array(diffs) > 0))
    # 14 pairs: the fixed-horizon figures say "significant", but they do not decide, and the
    # paired test is silent below its minimum, so the verdict says so and why.
    assert (overall.sequence_low, overall.sequential_p) == (None, 1.0)
    [verdict] = report.verdicts
    assert (verdict.metric, verdict.decision) == ("overall_score", "not enough data")
    assert f"14 pairs (< {MIN_PAIRS})" in verdict.why
    text = render_report(report)
    assert "descriptive: [paired t 95%]" in text and "never a verdict" in text

    diffs += paired_jobs(crafter, rng, MIN_PAIRS - 14, lift=1.0)
    report = build_report(crafter.engine, days=1, advisor="ansel")
    [verdict] = report.verdicts
    assert (verdict.metric, verdict.method, verdict.n_variant) == (
        "paired overall_score", PAIRED_METHOD, MIN_PAIRS
    )  # fmt: skip
    assert verdict.decision == "fine_tuned better", verdict
    assert f"{MIN_PAIRS} shadow pairs" in verdict.why
    assert report.paired[0].overall.sequence_low == verdict.ci_low
    assert verdict.ci_low is not None and verdict.ci_low > 0
    # The shadows are visible per variant but outside the split, SRM and primary numbers.
    by_name = {v.variant: v for v in report.variants}
    assert (by_name["fine_tuned"].shadow_jobs, by_name["fine_tuned"].routed) == (MIN_PAIRS, 0)
    assert report.total_jobs == MIN_PAIRS
    routed = next(c for c in report.srm if c.stage == "routed" and c.weights_version == version)
    assert routed.observed == {"base": MIN_PAIRS}
    text = render_report(report)
    assert "Paired shadow runs" in text and f"{MIN_PAIRS} pairs" in text
    assert "paired overall_score" in text


def test_feedback_decides_once_both_arms_have_enough_ratings(migrated_url: str) -> None:
    engine = engine_for(migrated_url)
    crafter = Crafter(engine)
    set_weights(migrated_url, "ansel", {"base": 0.5, "fine_tuned": 0.5})
    rng = random.Random(8)
    paired_jobs(crafter, rng, 12, lift=-1.0)  # the model's own scores say fine_tuned is worse
    store = FeedbackStore(engine)
    ratings: dict[str, list[int]] = {"base": [], "fine_tuned": []}
    helpful: dict[str, list[bool]] = {"base": [], "fine_tuned": []}
    for variant, centre in (("base", 2.6), ("fine_tuned", 3.9)):
        for job_id in crafter.queue(24, variant=variant):
            crafter.succeed(job_id, scores_around(rng, 6.0))
            rating = min(5, max(1, round(rng.gauss(centre, 0.8))))
            says = rating >= 4
            store.record(
                job_id, FeedbackValues(rating=rating, helpful=says), simulated=variant == "base"
            )
            ratings[variant].append(rating)
            helpful[variant].append(says)

    report = build_report(engine, days=1, advisor="ansel")

    summaries = {f.variant: f for f in report.feedback}
    ft = summaries["fine_tuned"]
    assert (ft.ratings, ft.simulated, summaries["base"].simulated) == (24, 0, 24)
    assert ft.rating.mean == pytest.approx(np.mean(ratings["fine_tuned"]))
    low, high = stats.t.interval(0.95, 23, loc=np.mean(ratings["fine_tuned"]),
                                 scale=stats.sem(ratings["fine_tuned"]))  # fmt: skip
    assert (ft.rating.ci_low, ft.rating.ci_high) == pytest.approx((low, high))
    assert ft.helpful_rate == pytest.approx(np.mean(helpful["fine_tuned"]))
    wilson = stats.binomtest(sum(helpful["fine_tuned"]), 24).proportion_ci(method="wilson")
    assert (ft.helpful_ci_low, ft.helpful_ci_high) == pytest.approx((wilson.low, wilson.high))
    [verdict] = report.verdicts
    assert (verdict.metric, verdict.n_variant, verdict.n_base) == ("feedback rating", 24, 24)
    assert verdict.decision == "fine_tuned better"  # the users' verdict, not the model's
    assert verdict.estimate == pytest.approx(
        np.mean(ratings["fine_tuned"]) - np.mean(ratings["base"])
    )
    text = render_report(report)
    assert "simulated = demo raters" in text and "on feedback rating" in text


def test_wilcoxon_is_exact_only_for_small_untied_samples_and_never_a_permutation_test() -> None:
    untied = np.array([0.3, -0.1, 0.7, 1.1, -0.4, 0.9, 1.3, 0.2, -0.6, 1.7])
    p, method = wilcoxon_p(untied)
    assert method == "exact" and p == pytest.approx(stats.wilcoxon(untied, method="exact").pvalue)
    # 13 tied pairs, the case: scipy's default fell into a 1.6 s permutation test.
    tied = np.array([-1.0, -0.5, -1.0, -0.5, -1.5, 0.5, -1.0, -0.5, -1.0, -1.5, -0.5, -1.0, 0.0])
    p, method = wilcoxon_p(tied)
    expected = stats.wilcoxon(tied[tied != 0], method="asymptotic").pvalue
    assert method == "asymptotic" and p == pytest.approx(expected)
    assert wilcoxon_p(np.zeros(5)) == (None, None)
    large = np.random.default_rng(4).normal(0.1, 1.0, 1000)
    assert wilcoxon_p(large)[1] == "asymptotic"


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value


def test_rows_an_older_worker_finished_without_stored_scores_report_the_same(
    migrated_url: str,
) -> None:
    crafter = Crafter(engine_for(migrated_url))
    rng = random.Random(5)
    for variant, centre in (("base", 6.0), ("fine_tuned", 6.6)):
        for job_id in crafter.queue(30, variant=variant):
            crafter.succeed(job_id, scores_around(rng, centre))
    now = utcnow()

    def seen() -> tuple[Any, ...]:
        report = build_report(crafter.engine, days=1, advisor=None, now=now).to_dict()
        performance = compare_model_performance(crafter.engine, days=1, now=now)
        # Sums in another order differ in the last bits (PostgreSQL's avg, numpy's mean).
        return rounded(report), rounded(performance)

    stored = seen()
    with crafter.engine.begin() as conn:
        # The worker's write stored every analysis's scores beside it.
        assert conn.scalar(select(func.count()).where(Job.overall_score.is_(None))) == 0
        older = conn.execute(select(Job.id).order_by(Job.id).limit(31)).scalars().all()
        conn.execute(update(Job).where(Job.id.in_(older))
                     .values(overall_score=None, dimension_scores=None))  # fmt: skip
        assert conn.scalar(select(func.count()).where(Job.overall_score.is_(None))) == 31
    report, performance = seen()

    assert report == stored[0] and performance == stored[1]
    by_name = {v["variant"]: v for v in report["variants"]}
    assert by_name["fine_tuned"]["score"]["n"] == 30
    assert set(by_name["base"]["dimension_means"]) == set(DIMENSIONS)
