"""The A/B verdict under peeking: A/A false positives and power, sequential against Welch.

Simulated experiments (no model, no services): 50/50 split, normal scores (sd 1.5), looked at
after every LOOK_EVERY jobs. The sequential verdict is the report's own function
(producers.ops.sequential.two_sample_paths: the t-mixture mSPRT), vectorised over
experiments; Welch is scipy's statistic and t distribution at the same looks. A cross-check
compares the closed form with savvi (Lindon's anytime-valid linear models) when installed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bench.stats import Section, table
from producers.ops.sequential import (
    ALPHA,
    MIXTURE_SD,
    ODDS_RATIOS,
    rate_above_log_lr,
    t_mixture_log_bf,
    t_mixture_radius,
    two_sample_paths,
)

LOOK_EVERY = 20
SD = 1.5
EFFECT = 0.5


@dataclass(frozen=True)
class Plan:
    experiments: int
    jobs: int
    seed: int = 20261202


def welch_at_looks(values: np.ndarray, is_b: np.ndarray, looks: np.ndarray) -> np.ndarray:
    """(experiments, looks) booleans: Welch's two-sided p < ALPHA on the first k+1 jobs."""
    out = np.zeros((values.shape[0], len(looks)), dtype=bool)
    for i, k in enumerate(looks):
        v, b = values[:, : k + 1], is_b[:, : k + 1]
        nb, na = b.sum(1), (~b).sum(1)
        mb, ma = (v * b).sum(1) / nb, (v * ~b).sum(1) / na
        vb = (((v - mb[:, None]) ** 2) * b).sum(1) / (nb - 1)
        va = (((v - ma[:, None]) ** 2) * ~b).sum(1) / (na - 1)
        se2 = vb / nb + va / na
        df = se2**2 / ((vb / nb) ** 2 / (nb - 1) + (va / na) ** 2 / (na - 1))
        out[:, i] = 2 * stats.t.sf(np.abs(mb - ma) / np.sqrt(se2), df) < ALPHA
    return out


def _first_look(hits: np.ndarray, looks: np.ndarray) -> np.ndarray:
    """Jobs at the first look that rejected, or nan."""
    first = np.where(hits.any(1), hits.argmax(1), -1)
    return np.where(first >= 0, (looks[np.maximum(first, 0)] + 1).astype(float), np.nan)


def simulate(plan: Plan, effect: float) -> dict[str, float]:
    rng = np.random.default_rng(plan.seed + int(effect * 1000))
    looks = np.arange(LOOK_EVERY - 1, plan.jobs, LOOK_EVERY)
    is_b = rng.random((plan.experiments, plan.jobs)) < 0.5
    values = rng.normal(5.0, SD, (plan.experiments, plan.jobs)) + effect * is_b
    started = time.perf_counter()
    paths = two_sample_paths(values, is_b)
    seq_seconds = time.perf_counter() - started
    seq_hits = paths["p"][:, looks] <= ALPHA
    welch_hits = welch_at_looks(values, is_b, looks)
    covered = (paths["low"][:, -1] <= effect) & (paths["high"][:, -1] >= effect)
    return {
        "sequential": float(seq_hits.any(1).mean()),
        "sequential_every_job": float((paths["p"][:, -1] <= ALPHA).mean()),
        "welch_peeking": float(welch_hits.any(1).mean()),
        "welch_once": float(welch_hits[:, -1].mean()),
        "sequential_median_jobs": float(np.nanmedian(_first_look(seq_hits, looks)))
        if seq_hits.any()
        else math.nan,
        "coverage": float(covered.mean()),
        "seconds": seq_seconds,
    }


def rate_false_alarms(plan: Plan, rate: float) -> float:
    """The guard's cap rule at exactly its cap: share of experiments that ever breach."""
    rng = np.random.default_rng(plan.seed + 7)
    y = rng.random((plan.experiments, plan.jobs)) < rate
    return float((rate_above_log_lr(y, rate).max(axis=1) >= math.log(1 / ALPHA)).mean())


def cross_check(seed: int) -> list[str]:
    """The closed form against savvi's LinearRegression (design [1, arm]), step by step."""
    try:
        from savvi.linear_regression import LinearRegression
    except ImportError:
        return [
            "savvi is not installed here: `pip install savvi py_markdown_table` to compare. "
            "The suite cross-checks the closed form against its defining integrals instead "
            "(tests/producers/ops/test_sequential.py)."
        ]
    rng = np.random.default_rng(seed)
    n = 200
    arm = rng.random(n) < 0.5
    y = rng.normal(5.0, SD, n) + 0.4 * arm
    model = LinearRegression(alpha=ALPHA, p=2, phi=1 / MIXTURE_SD**2)
    worst_p = worst_ci = worst_ours = 0.0
    for i in range(n):
        model.update(np.array([y[i], 1.0, float(arm[i])]))
        if i < 4 or not (arm[: i + 1].any() and (~arm[: i + 1]).any()):
            continue
        theirs_p = float(model.calculate_p_value()[1])
        theirs_ci = model.calculate_conf_int()[1]
        a, b = y[: i + 1][~arm[: i + 1]], y[: i + 1][arm[: i + 1]]
        ss = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
        k = i + 1
        z2 = len(a) * len(b) / k
        se = math.sqrt(ss / (k - 2) / z2)
        diff = b.mean() - a.mean()
        # savvi's degrees of freedom are n - 3 (one fewer than ours, n - 2).
        for nu, record in ((k - 3, "savvi"), (k - 2, "ours")):
            p = math.exp(-float(t_mixture_log_bf((diff / se) ** 2, nu, z2, MIXTURE_SD)))
            radius = float(t_mixture_radius(se, nu, z2, ALPHA, MIXTURE_SD))
            if record == "savvi":
                worst_p = max(worst_p, abs(min(1.0, p) - min(1.0, theirs_p)))
                if math.isfinite(radius) and np.all(np.isfinite(theirs_ci)):
                    worst_ci = max(worst_ci, abs(radius - (theirs_ci[1] - theirs_ci[0]) / 2))
            else:
                worst_ours = max(worst_ours, abs(min(1.0, p) - min(1.0, theirs_p)))
    return [
        f"Cross-check against savvi (Lindon et al.'s anytime-valid linear models, an independent "
        f"implementation by the method's authors), {n} observations, every step: with savvi's "
        f"degrees of freedom (n - 3) our closed form differs by at most {worst_p:.1e} in the "
        f"p-value and {worst_ci:.1e} in the interval's half-width (savvi estimates by "
        f"recursive least squares, hence the last digits). Ours uses n - 2, the two-sample "
        f"t-test's degrees of freedom, which the suite checks against the defining integral: "
        f"that moves the p-value by at most {worst_ours:.1e}."
    ]


def run(plan: Plan) -> Section:
    null = simulate(plan, 0.0)
    power = simulate(plan, EFFECT)
    cap = rate_false_alarms(plan, 0.10)
    looks = plan.jobs // LOOK_EVERY

    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    rows = [
        ["A/A: false-positive rate", pct(null["sequential"]), pct(null["welch_peeking"]),
         pct(null["welch_once"])],
        [f"power: true difference {EFFECT} (sd {SD})", pct(power["sequential"]),
         pct(power["welch_peeking"]), pct(power["welch_once"])],
        ["median jobs to a verdict (power runs that had one)",
         f"{power['sequential_median_jobs']:.0f}", "-", "-"],
    ]  # fmt: skip
    section = Section(
        "Sequential A/B verdicts",
        intro=(
            f"{plan.experiments} simulated experiments of {plan.jobs} jobs each (50/50 split, "
            f"normal scores, sd {SD}), looked at after every {LOOK_EVERY} jobs ({looks} looks). "
            f"Sequential: the report's verdict, the t-mixture mSPRT (mixture sd {MIXTURE_SD} of "
            f"the standardised effect, alpha {ALPHA}); a look rejects when its always-valid "
            "p-value is at most alpha. Welch: the fixed-horizon test at the same looks (any "
            "look rejecting counts), and read once at the last look. Seeded; no services."
        ),
    )
    section.tables.append(
        table(["", "sequential (mSPRT)", f"Welch, {looks} looks", "Welch, read once"], rows)
    )
    section.notes += [
        f"Welch's power at {looks} looks is bought with its {pct(null['welch_peeking'])} A/A "
        "rate: it is not a usable test when read at every stage; the sequential test gives up "
        "some power at this horizon for a guarantee at every look.",
        f"Read after every single job instead of every {LOOK_EVERY}, the sequential A/A rate is "
        f"{pct(null['sequential_every_job'])} (Ville's inequality bounds it by alpha for any "
        f"number of looks). The confidence sequence covered the true difference at the end in "
        f"{pct(null['coverage'])} (A/A) and {pct(power['coverage'])} (power runs) of the "
        f"experiments.",
        f"The guard's cap rule (odds-ratio mixture SPRT over odds ratios {list(ODDS_RATIOS)}) "
        f"with the true rate exactly at a 10% cap, checked after every one of {plan.jobs} jobs: "
        f"{pct(cap)} of experiments ever breached.",
        *cross_check(plan.seed),
        f"Simulation time: {null['seconds'] + power['seconds']:.2f} s for the sequential paths "
        "of both runs.",
    ]
    return section
