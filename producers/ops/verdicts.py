"""What decides an A/B test: feedback per variant, paired shadow runs, and the verdicts.

A verdict judges one candidate against base for one advisor on, in order of preference: the
users' ratings of the critiques (enough of them on both arms), else the paired difference of
`overall_score` on shadow pairs (the same photo through both arms), else the unpaired score.
Each is an always-valid sequential test over the observations in the order they became known,
so a verdict can be read after every job. Failures, invalid output and inference time are
guardrails (producers/ops/guardrails.py).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.analysis import DIMENSIONS
from jobs.contracts import BASE_VARIANT, Assignment, Status
from producers.errors import StatisticsError
from producers.ops.guardrails import RuleCheck, check_rules
from producers.ops.sequential import (
    ALPHA,
    MEANS_METHOD,
    MIN_PAIRS,
    MIXTURE_SD,
    Floats,
    SequentialResult,
    one_sample,
    two_sample,
)
from producers.ops.stats import (
    INVALID_DATA,
    NO_DIFFERENCE,
    NOT_ENOUGH_DATA,
    ScoreSummary,
    summarise,
)

# Below these, the verdict falls back to the next metric (MIN_PAIRS: the paired test's own).
MIN_RATINGS_PER_ARM = 20

FEEDBACK_METRIC = "feedback rating"
PAIRED_METRIC = "paired overall_score"
UNPAIRED_METRIC = "overall_score"


@dataclass(frozen=True)
class FeedbackSummary:
    """Ratings of one variant's critiques (primary jobs); `simulated` ones are demo raters'."""

    variant: str
    ratings: int
    simulated: int
    rating: ScoreSummary  # mean rating 1-5 with a 95% t-interval
    helpful_answers: int  # ratings that said helpful or not
    helpful_rate: float | None
    helpful_ci_low: float | None  # Wilson 95%
    helpful_ci_high: float | None


@dataclass(frozen=True)
class PairedDescriptive:
    """Fixed-horizon figures on the same differences: valid only if read once, never a verdict."""

    paired_t_low: float | None  # paired t, 95%
    paired_t_high: float | None
    wilcoxon_p: float | None
    wilcoxon_method: str | None  # "exact" (small n, no ties) or "asymptotic"


@dataclass(frozen=True)
class PairedStat:
    """candidate - base on one score over the pairs: the always-valid confidence sequence and
    p (what decides), with the fixed-horizon figures under `descriptive`."""

    name: str
    mean_difference: float | None
    candidate_higher: float | None  # share of photos the candidate scored higher
    candidate_lower: float | None
    sequence_low: float | None
    sequence_high: float | None
    sequential_p: float
    descriptive: PairedDescriptive


@dataclass(frozen=True)
class PairedComparison:
    advisor: str
    variant: str  # the candidate; differences are variant - base
    pairs: int
    overall: PairedStat
    dimensions: tuple[PairedStat, ...]


@dataclass(frozen=True)
class Verdict:
    """One candidate against base for one advisor; `method` names the test."""

    advisor: str
    variant: str
    metric: str
    method: str
    why: str  # why this metric
    n_base: int
    n_variant: int  # for the paired metric: both are the number of pairs
    estimate: float | None  # variant - base
    ci_low: float | None  # the confidence sequence
    ci_high: float | None
    p: float  # always-valid
    alpha: float
    parameters: dict[str, float]
    decision: str
    guardrails: tuple[RuleCheck, ...]
    guardrails_ok: bool


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float | None, float | None]:
    if n == 0:
        return None, None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def feedback_summaries(
    rows: Sequence[Any], feedback: Sequence[Any], variants: Sequence[str]
) -> list[FeedbackSummary]:
    """Per variant over primary jobs; `feedback` rows carry job_id, rating, helpful, simulated."""
    variant_of = {r.id: r.variant for r in rows if r.shadow_of is None}
    by_variant: dict[str, list[Any]] = defaultdict(list)
    for f in feedback:
        if f.job_id in variant_of:
            by_variant[variant_of[f.job_id]].append(f)
    out = []
    for v in variants:
        given = by_variant.get(v, [])
        answers = [f.helpful for f in given if f.helpful is not None]
        low, high = wilson(sum(answers), len(answers))
        out.append(
            FeedbackSummary(
                v,
                len(given),
                sum(1 for f in given if f.simulated),
                summarise([float(f.rating) for f in given]),
                len(answers),
                sum(answers) / len(answers) if answers else None,
                low,
                high,
            )  # fmt: skip
        )
    return out


def _pairs(rows: Sequence[Any]) -> dict[tuple[str, str], list[tuple[Any, Any]]]:
    """(advisor, candidate) -> [(candidate row, base row)] of succeeded pairs, in the order
    the second of each pair finished."""
    by_id = {r.id: r for r in rows}
    found: dict[tuple[str, str], list[tuple[Any, Any]]] = defaultdict(list)
    for shadow in rows:
        primary = by_id.get(shadow.shadow_of) if shadow.shadow_of else None
        if primary is None or not all(
            r.status == Status.SUCCEEDED and r.overall is not None for r in (shadow, primary)
        ):
            continue
        if BASE_VARIANT not in (shadow.variant, primary.variant):
            continue
        cand, base = (shadow, primary) if primary.variant == BASE_VARIANT else (primary, shadow)
        found[(primary.advisor, cand.variant)].append((cand, base))
    for pairs in found.values():
        pairs.sort(key=lambda p: max(p[0].completed_at, p[1].completed_at))
    return found


# scipy's exact Wilcoxon is instant up to here; past it, or with ties, the normal approximation.
EXACT_WILCOXON_MAX_N = 25


def wilcoxon_p(diffs: Floats) -> tuple[float | None, str | None]:
    """Two-sided signed-rank p over the non-zero differences, and the method used.

    Never scipy's "auto", which turns into a slow permutation test on small tied samples."""
    nonzero = diffs[diffs != 0]
    if len(nonzero) == 0:
        return None, None
    untied = len(np.unique(np.abs(nonzero))) == len(nonzero)
    method = "exact" if len(nonzero) <= EXACT_WILCOXON_MAX_N and untied else "asymptotic"
    from scipy import stats  # lazily: commands that only read a plan skip scipy

    return float(stats.wilcoxon(nonzero, method=method).pvalue), method


def paired_stat(name: str, diffs: Sequence[float], alpha: float = ALPHA) -> PairedStat:
    n = len(diffs)
    seq = one_sample(list(diffs), alpha=alpha)
    if n == 0:
        nothing = PairedDescriptive(None, None, None, None)
        return PairedStat(name, None, None, None, None, None, 1.0, nothing)
    arr = np.asarray(diffs, dtype=float)
    low = high = None
    with warnings.catch_warnings():
        # Near-identical differences are valid input; scipy warns about precision anyway.
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        if n >= 2 and np.var(arr) > 0:
            from scipy import stats

            t = stats.ttest_1samp(arr, 0.0).confidence_interval(1 - alpha)
            low, high = float(t.low), float(t.high)
        w_p, w_method = wilcoxon_p(arr)
    return PairedStat(
        name, float(arr.mean()), float(np.mean(arr > 0)), float(np.mean(arr < 0)),
        seq.ci_low, seq.ci_high, seq.p, PairedDescriptive(low, high, w_p, w_method),
    )  # fmt: skip


def paired_comparisons(rows: Sequence[Any]) -> list[PairedComparison]:
    out = []
    for (advisor, variant), pairs in sorted(_pairs(rows).items()):
        overall = [c.overall - b.overall for c, b in pairs]
        dims = []
        for name in DIMENSIONS:
            values = [(c.score_of(name), b.score_of(name)) for c, b in pairs]
            dims.append(
                paired_stat(name, [c - b for c, b in values if c is not None and b is not None])
            )
        out.append(
            PairedComparison(
                advisor, variant, len(pairs), paired_stat("overall_score", overall), tuple(dims)
            )  # fmt: skip
        )
    return out


def _decision(variant: str, test: SequentialResult) -> str:
    # Each test is silent (no estimate) until its minimum sample: docs/statistics.md.
    if test.estimate is None:
        return NOT_ENOUGH_DATA
    if not test.is_significant:
        return NO_DIFFERENCE
    return f"{variant} better" if test.estimate > 0 else f"{variant} worse"


def _arms(split: Sequence[Any], pairs: Mapping[tuple[str, str], Any]) -> set[tuple[str, str]]:
    return {(r.advisor, r.variant) for r in split if r.variant != BASE_VARIANT} | set(pairs)


def verdict_arms(rows: Sequence[Any]) -> list[tuple[str, str]]:
    """The (advisor, variant) pairs verdicts() judges over `rows`, in its order."""
    return sorted(_arms([r for r in rows if r.assignment == Assignment.SPLIT], _pairs(rows)))


def verdicts(
    rows: Sequence[Any],
    feedback: Sequence[Any],
    *,
    alpha: float = ALPHA,
    skip: Collection[tuple[str, str]] = (),
) -> list[Verdict]:
    """One per (advisor, non-base variant with split jobs or pairs), except the arms in
    `skip` (judged elsewhere by the caller)."""
    split = [r for r in rows if r.assignment == Assignment.SPLIT]
    pairs = _pairs(rows)
    ratings: dict[str, list[Any]] = defaultdict(list)
    for f in feedback:
        ratings[f.job_id].append(f)
    out = []
    for advisor, variant in sorted(_arms(split, pairs) - set(skip)):
        mine = [r for r in split if r.advisor == advisor and r.variant in (variant, BASE_VARIANT)]
        guardrails = tuple(check_rules(mine, variant))
        out.append(
            _verdict(
                advisor,
                variant,
                mine,
                ratings,
                pairs.get((advisor, variant), []),
                guardrails,
                alpha,
            )  # fmt: skip
        )
    return out


def _verdict(
    advisor: str,
    variant: str,
    rows: Sequence[Any],
    ratings: dict[str, list[Any]],
    pairs: Sequence[tuple[Any, Any]],
    guardrails: tuple[RuleCheck, ...],
    alpha: float,
) -> Verdict:
    rated = sorted(
        (min(f.created_at for f in ratings[r.id]), r.variant == variant,
         float(np.mean([f.rating for f in ratings[r.id]])))
        for r in rows if r.id in ratings
    )  # fmt: skip
    n_rated_v = sum(1 for _, is_v, _ in rated if is_v)
    n_rated_b = len(rated) - n_rated_v
    if min(n_rated_v, n_rated_b) >= MIN_RATINGS_PER_ARM:
        metric, why = (
            FEEDBACK_METRIC,
            f"{len(rated)} rated critiques (>= {MIN_RATINGS_PER_ARM} per arm)",
        )
        values, arms = [x for _, _, x in rated], [v for _, v, _ in rated]
        n_base, n_variant = n_rated_b, n_rated_v
    elif len(pairs) >= MIN_PAIRS:
        metric = PAIRED_METRIC
        why = (f"{n_rated_v}+{n_rated_b} ratings (< {MIN_RATINGS_PER_ARM} per arm); "
               f"{len(pairs)} shadow pairs")  # fmt: skip
        values, arms = [c.overall - b.overall for c, b in pairs], []
        n_base = n_variant = len(pairs)
    else:
        metric = UNPAIRED_METRIC
        why = (f"{n_rated_v}+{n_rated_b} ratings (< {MIN_RATINGS_PER_ARM} per arm), "
               f"{len(pairs)} pairs (< {MIN_PAIRS})")  # fmt: skip
        scored = sorted(
            (r.completed_at, r.variant == variant, r.overall)
            for r in rows
            if r.status == Status.SUCCEEDED and r.overall is not None and r.completed_at is not None
        )
        values, arms = [x for _, _, x in scored], [v for _, v, _ in scored]
        n_variant = sum(arms)
        n_base = len(scored) - n_variant
    ok = not any(c.breached for c in guardrails)
    try:
        test = (one_sample(values, alpha=alpha) if metric == PAIRED_METRIC
                else two_sample(values, arms, alpha=alpha))  # fmt: skip
    except StatisticsError as exc:
        # Bad data gets a named reason, never a p-value computed on it.
        return Verdict(advisor, variant, metric, MEANS_METHOD, why, n_base, n_variant, None,
                       None, None, 1.0, alpha, {"mixture_sd": MIXTURE_SD},
                       f"{INVALID_DATA}: {exc}", guardrails, ok)  # fmt: skip
    return Verdict(
        advisor, variant, metric, test.method, why, n_base, n_variant, test.estimate,
        test.ci_low, test.ci_high, test.p, alpha, test.parameters,
        _decision(variant, test), guardrails, ok,
    )  # fmt: skip
