"""Guardrail rules of a candidate against base, each an always-valid test (guard and report).

Over the split jobs that finished (forced, fallback and shadow jobs excluded; bad input too),
in completion order:
- failure rate and invalid-output rate vs base: which arm each failure came from, against the
  candidate's share of the jobs finished before it (odds-ratio mixture SPRT, one-sided);
- the same two rates against absolute caps (odds-ratio mixture SPRT against the cap);
- inference time: the mSPRT with Welch variance on log inference time; a breach when the
  confidence sequence puts the candidate above `max_inference_ratio` times base.
The rate tests are exact at every n; the time test says nothing before MIN_PER_ARM succeeded
jobs per arm (producers/ops/sequential.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from jobs.contracts import BASE_VARIANT, Assignment, ErrorKind, Status
from producers.ops.sequential import ALPHA, rate_above, two_sample

# Bad input fails a job whatever the variant; it says nothing about the variant's health.
INPUT_ERRORS = frozenset(
    {
        ErrorKind.INVALID_IMAGE,
        ErrorKind.UNSUPPORTED_FORMAT,
        ErrorKind.UNKNOWN_ADVISOR,
        ErrorKind.INVALID_REQUEST,
    }
)


@dataclass(frozen=True)
class Limits:
    max_failure_rate: float = 0.10
    max_invalid_output_rate: float = 0.05
    max_inference_ratio: float = 1.5  # candidate / base, geometric mean inference time
    alpha: float = ALPHA


@dataclass(frozen=True)
class RuleCheck:
    """One rule's test; `p` is always-valid, `breached` means p <= alpha in the bad direction."""

    rule: str
    method: str
    variant_value: float | None  # the candidate's rate, or its inference-time ratio to base
    base_value: float | None  # base's rate (None for caps and the ratio)
    threshold: float | None  # the cap or the ratio limit
    n: int  # observations the test saw (jobs, or failures for the comparisons)
    p: float
    log_lr: float
    breached: bool
    # The confidence sequence of variant_value where the test has one (the time ratio).
    ci_low: float | None = None
    ci_high: float | None = None

    def describe(self) -> str:
        value = "-" if self.variant_value is None else f"{self.variant_value:.3f}"
        base = "" if self.base_value is None else f" vs base {self.base_value:.3f}"
        limit = "" if self.threshold is None else f" (limit {self.threshold:g})"
        verdict = "BREACHED" if self.breached else "ok"
        return f"{self.rule} {value}{base}{limit}: p {self.p:.3g} over {self.n}, {verdict}"


def judged(rows: Sequence[Any]) -> list[Any]:
    """Finished split jobs whose outcome says something about their variant, in order."""
    kept = [
        r for r in rows
        if r.assignment == Assignment.SPLIT
        and r.status in (Status.SUCCEEDED, Status.FAILED)
        and r.error_kind not in INPUT_ERRORS
        and r.completed_at is not None
    ]  # fmt: skip
    return sorted(kept, key=lambda r: r.completed_at)


@dataclass(frozen=True)
class _Outcomes:
    """The candidate's and base's judged jobs as arrays, read once for every rate rule."""

    is_candidate: NDArray[np.bool_]
    failed: NDArray[np.bool_]
    invalid: NDArray[np.bool_]

    @classmethod
    def of(cls, rows: Sequence[Any], variant: str) -> _Outcomes:
        n = len(rows)
        is_c = np.fromiter((r.variant == variant for r in rows), bool, n)
        failed = np.fromiter((r.status == Status.FAILED for r in rows), bool, n)
        invalid = np.fromiter((r.error_kind == ErrorKind.INVALID_OUTPUT for r in rows), bool, n)
        return cls(is_c, failed, failed & invalid)


def _versus_base(rule: str, is_c: NDArray[np.bool_], is_bad: NDArray[np.bool_],
                 limits: Limits) -> RuleCheck:  # fmt: skip
    # The candidate's share of the jobs finished before each one (smoothed): under "no
    # worse", the chance that a failure is the candidate's.
    before_c = np.concatenate([[0.0], np.cumsum(is_c)[:-1]])
    share = (before_c + 1) / (np.arange(len(is_c)) + 2)
    test = rate_above(is_c[is_bad].tolist(), share[is_bad].tolist(), alpha=limits.alpha)
    n_c, n_b = int(is_c.sum()), int((~is_c).sum())
    c_rate = float(is_bad[is_c].mean()) if n_c else None
    b_rate = float(is_bad[~is_c].mean()) if n_b else None
    worse = c_rate is not None and (b_rate is None or c_rate > b_rate)
    return RuleCheck(rule, test.method, c_rate, b_rate, None, test.n, test.p, test.log_lr,
                     test.is_significant and worse)  # fmt: skip


def _cap(rule: str, is_bad: NDArray[np.bool_], cap: float, alpha: float) -> RuleCheck:
    test = rate_above(is_bad.tolist(), cap, alpha=alpha)
    return RuleCheck(rule, test.method, test.estimate, None, cap, test.n, test.p, test.log_lr,
                     test.is_significant)  # fmt: skip


def _latency(rows: Sequence[Any], variant: str, limits: Limits) -> RuleCheck:
    timed = [
        r for r in rows
        if r.status == Status.SUCCEEDED and r.inference_ms and r.variant in (variant, BASE_VARIANT)
    ]  # fmt: skip
    is_c = [r.variant == variant for r in timed]
    limit = math.log(limits.max_inference_ratio)
    # Shifted by the limit, the test's null is "exactly the limit": rejecting it from above
    # is the confidence sequence lying wholly above max_inference_ratio.
    logs = [
        math.log(r.inference_ms) - (limit if c else 0.0) for r, c in zip(timed, is_c, strict=True)
    ]
    test = two_sample(logs, is_c, alpha=limits.alpha)

    def ratio(shifted: float | None) -> float | None:
        return math.exp(shifted + limit) if shifted is not None else None

    above = test.estimate is not None and test.estimate > 0
    return RuleCheck("inference time vs base", test.method, ratio(test.estimate), None,
                     limits.max_inference_ratio, test.n, test.p, test.log_lr,
                     test.is_significant and above, ratio(test.ci_low),
                     ratio(test.ci_high))  # fmt: skip


def check_rules(rows: Sequence[Any], variant: str, limits: Limits | None = None) -> list[RuleCheck]:
    """Every rule for `variant` against base over `rows` (job rows with variant, status,
    error_kind, assignment, completed_at, inference_ms)."""
    lim = limits or Limits()
    ordered = [r for r in judged(rows) if r.variant in (variant, BASE_VARIANT)]
    arms = _Outcomes.of(ordered, variant)
    mine = arms.is_candidate
    return [
        _versus_base("failure rate vs base", mine, arms.failed, lim),
        _versus_base("invalid-output rate vs base", mine, arms.invalid, lim),
        _cap("failure rate cap", arms.failed[mine], lim.max_failure_rate, lim.alpha),
        _cap(
            "invalid-output rate cap",
            arms.invalid[mine],
            lim.max_invalid_output_rate,
            lim.alpha,
        ),  # fmt: skip
        _latency(ordered, variant, lim),
    ]
