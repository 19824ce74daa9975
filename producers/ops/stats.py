"""A/B statistics over plain numbers: score summaries, the unpaired comparison, score copying."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from producers.errors import StatisticsError
from producers.ops import sequential
from producers.ops.sequential import MEANS_METHOD

ALPHA = 0.05
# Upstream, 36 of 43 outputs copied the prompt's numbers; half copied is clearly broken.
COPY_SUSPICIOUS_SHARE = 0.5

NOT_ENOUGH_DATA = "not enough data"
INVALID_DATA = "invalid data"
NO_DIFFERENCE = "no significant difference"


@dataclass(frozen=True)
class ScoreSummary:
    """Mean with a two-sided 95% t-interval."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None


def summarise(values: Sequence[float]) -> ScoreSummary:
    n = len(values)
    if n == 0:
        return ScoreSummary(0, None, None, None, None)
    arr = np.asarray(values, dtype=float)
    if not np.isfinite(arr).all():
        # A non-finite score has no mean; the verdict names the bad data (INVALID_DATA).
        return ScoreSummary(n, None, None, None, None)
    mean = float(arr.mean())
    if n < 2:
        return ScoreSummary(1, mean, None, None, None)
    std = float(arr.std(ddof=1))
    from scipy import stats  # lazily: commands that only read a plan skip scipy

    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return ScoreSummary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class WelchDescriptive:
    """Welch's fixed-horizon interval and test: valid only if read once, never a verdict."""

    ci_low: float | None
    ci_high: float | None
    t: float | None
    p: float | None


NO_WELCH = WelchDescriptive(None, None, None, None)


@dataclass(frozen=True)
class Comparison:
    """`variant - base` on overall_score for one advisor's split traffic.

    The verdict is the always-valid test's (`method`, `sequence_*`, `sequential_p`); Welch's
    figures sit under `descriptive`.
    """

    advisor: str
    variant: str
    n_base: int
    n_variant: int
    mean_base: float | None
    mean_variant: float | None
    difference: float | None
    verdict: str
    method: str = MEANS_METHOD
    sequence_low: float | None = None
    sequence_high: float | None = None
    sequential_p: float | None = None
    descriptive: WelchDescriptive = NO_WELCH


def compare_scores(
    advisor: str,
    variant: str,
    stream: Sequence[tuple[bool, float]],
    *,
    alpha: float = ALPHA,
) -> Comparison:
    """`stream`: (is the variant's, score) in the order the jobs finished."""
    variant_scores = [x for is_v, x in stream if is_v]
    base_scores = [x for is_v, x in stream if not is_v]
    nv, nb = len(variant_scores), len(base_scores)
    mean_v = float(np.mean(variant_scores)) if nv else None
    mean_b = float(np.mean(base_scores)) if nb else None
    diff = mean_v - mean_b if mean_v is not None and mean_b is not None else None
    no_test = Comparison(advisor, variant, nb, nv, mean_b, mean_v, diff, "")
    try:
        seq = sequential.two_sample([x for _, x in stream], [v for v, _ in stream], alpha=alpha)
    except StatisticsError as exc:
        return replace(no_test, verdict=f"{INVALID_DATA}: {exc}")
    if seq.estimate is None:
        return replace(no_test, verdict=NOT_ENOUGH_DATA)
    tested = replace(no_test, sequence_low=seq.ci_low, sequence_high=seq.ci_high,
                     sequential_p=seq.p)  # fmt: skip
    verdict = NO_DIFFERENCE
    if seq.is_significant and diff is not None:
        verdict = f"{variant} better" if diff > 0 else f"{variant} worse"
    if np.var(variant_scores) == 0 and np.var(base_scores) == 0:
        # Welch's statistic is undefined with no variance in either arm.
        return replace(tested, verdict=verdict)
    with warnings.catch_warnings():
        # One arm without spread (identical scores) is a valid Welch input; scipy warns anyway.
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        from scipy import stats

        res = stats.ttest_ind(variant_scores, base_scores, equal_var=False)
    ci = res.confidence_interval(1 - alpha)
    welch = WelchDescriptive(float(ci.low), float(ci.high), float(res.statistic), float(res.pvalue))
    return replace(tested, verdict=verdict, descriptive=welch)


@dataclass(frozen=True)
class ScoreCopy:
    """How many outputs share their exact dimension scores with another output."""

    scope: str
    outputs: int
    copied: int
    share: float | None
    most_common: tuple[tuple[tuple[int, ...], int], ...]
    is_suspicious: bool


def score_copy(scope: str, score_tuples: Sequence[tuple[int, ...]], top: int = 3) -> ScoreCopy:
    counts = Counter(score_tuples)
    copied = sum(n for n in counts.values() if n > 1)
    n = len(score_tuples)
    share = copied / n if n else None
    repeated = tuple((scores, k) for scores, k in counts.most_common(top) if k > 1)
    suspicious = share is not None and share >= COPY_SUSPICIOUS_SHARE
    return ScoreCopy(scope, n, copied, share, repeated, suspicious)
