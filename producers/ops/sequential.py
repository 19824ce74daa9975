"""Always-valid inference: mSPRT (t-mixture) for means, an odds-ratio mixture SPRT for rates.

Both are test martingales under their null hypothesis, so by Ville's inequality the chance
that they *ever* reach 1/alpha is at most alpha: a verdict may be read after every job.

- Means (`two_sample`, `one_sample`): the mixture sequential probability ratio test with a
  normal mixture N(0, MIXTURE_SD^2) on the standardised effect and the scale-invariant prior
  on the variance (the t-mixture: Gönen et al. 2005, Lindon et al. 2024), so no variance is
  plugged in and small samples are exact under normal errors. Its inversion is a confidence
  sequence (Lai 1976).
- Rates (`rate_above`): Bernoulli outcomes against a null rate p0 (one per observation),
  mixed over the odds ratios ODDS_RATIOS > 1: one-sided, exact, no normal approximation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

ALPHA = 0.05
# The mixture's sd of the standardised effect (difference / sd of one observation): tuned for
# effects of a third of an sd at a few hundred jobs per arm.
MIXTURE_SD = 0.3
# Alternatives of the rate tests, as odds ratios over the null rate, equally weighted.
ODDS_RATIOS = (1.5, 2.0, 3.0, 5.0, 10.0)

MEANS_METHOD = "sequential (mSPRT)"
RATES_METHOD = "sequential (odds-ratio mixture SPRT)"

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class SequentialResult:
    """The test after its last observation; `ci_*` is the confidence sequence (running
    intersection) and `p` the always-valid p-value (running minimum of 1 / likelihood ratio)."""

    method: str
    n: int  # observations the test has seen (both arms, or pairs)
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    p: float
    log_lr: float  # log likelihood ratio (Bayes factor) after the last observation
    alpha: float
    parameters: dict[str, float]

    @property
    def is_significant(self) -> bool:
        return self.p <= self.alpha


def t_mixture_log_bf(t2: ArrayLike, nu: ArrayLike, z2: ArrayLike, mixture_sd: float) -> Floats:
    """log Bayes factor of the t-mixture for a t statistic with `nu` degrees of freedom and
    effective sample size `z2` (n for one sample, n_a n_b / (n_a + n_b) for two).

    `t2` may be infinite (no spread in the data); the limit is finite: r^(-nu/2).
    """
    t2, nu, z2 = (np.asarray(v, dtype=float) for v in (t2, nu, z2))
    phi = 1.0 / mixture_sd**2
    r = phi / (phi + z2)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ratio = np.where(np.isinf(t2), -np.log(r), np.log1p(t2 / nu) - np.log1p(r * t2 / nu))
    return np.asarray(0.5 * np.log(r) + 0.5 * (nu + 1) * ratio, dtype=float)


def t_mixture_radius(
    se: ArrayLike, nu: ArrayLike, z2: ArrayLike, alpha: float, mixture_sd: float
) -> Floats:
    """Half-width of the confidence sequence: the t values the test would not reject."""
    se, nu, z2 = (np.asarray(v, dtype=float) for v in (se, nu, z2))
    phi = 1.0 / mixture_sd**2
    r = phi / (phi + z2)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        c = (r * alpha**2) ** (1.0 / (nu + 1))
        t = np.sqrt(nu * (1 - c) / (c - r))
        radius = np.where(c > r, se * t, np.inf)
    return np.where(se == 0, np.where(c > r, 0.0, np.inf), radius)


def _running(log_bf: Floats, est: Floats, radius: Floats) -> tuple[Floats, Floats, Floats]:
    """Always-valid p-values and the running intersection of the intervals, along axis -1."""
    p = np.minimum(1.0, np.exp(-np.maximum.accumulate(np.nan_to_num(log_bf, nan=0.0), axis=-1)))
    low = np.maximum.accumulate(np.where(np.isnan(est), -np.inf, est - radius), axis=-1)
    high = np.minimum.accumulate(np.where(np.isnan(est), np.inf, est + radius), axis=-1)
    return p, low, high


def two_sample_paths(
    values: ArrayLike, is_b: ArrayLike, *, alpha: float = ALPHA, mixture_sd: float = MIXTURE_SD
) -> dict[str, Floats]:
    """The test of mean(b) - mean(a) after every observation, along the last axis.

    `values` and `is_b` have the same shape (..., n): observations in the order they became
    known, and which arm each belongs to. Vectorised over leading axes (experiments).
    Pooled variance (Student), as in the t-mixture's model.
    """
    x = np.asarray(values, dtype=float)
    b = np.asarray(is_b, dtype=bool)
    nb = np.cumsum(b, axis=-1).astype(float)
    na = np.cumsum(~b, axis=-1).astype(float)
    sb, sa = np.cumsum(np.where(b, x, 0.0), axis=-1), np.cumsum(np.where(b, 0.0, x), axis=-1)
    qb = np.cumsum(np.where(b, x * x, 0.0), axis=-1)
    qa = np.cumsum(np.where(b, 0.0, x * x), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mb, ma = sb / nb, sa / na
        ss = np.maximum(qb - nb * mb * mb, 0.0) + np.maximum(qa - na * ma * ma, 0.0)
        nu = na + nb - 2
        ready = (na >= 1) & (nb >= 1) & (nu >= 1)
        est = np.where(ready, mb - ma, np.nan)
        z2 = np.where(ready, na * nb / (na + nb), np.nan)
        se = np.sqrt(np.where(ready, ss / nu, np.nan) / z2)
        t2 = np.where(se > 0, (est / se) ** 2, np.where(est == 0, 0.0, np.inf))
        log_bf = np.where(ready, t_mixture_log_bf(t2, nu, z2, mixture_sd), np.nan)
        radius = np.where(ready, t_mixture_radius(se, nu, z2, alpha, mixture_sd), np.inf)
    p, low, high = _running(log_bf, est, radius)
    return {"estimate": est, "log_bf": log_bf, "p": p, "low": low, "high": high}


def one_sample_paths(
    values: ArrayLike, *, alpha: float = ALPHA, mixture_sd: float = MIXTURE_SD
) -> dict[str, Floats]:
    """The test of mean = 0 (e.g. paired differences) after every observation, last axis."""
    x = np.asarray(values, dtype=float)
    n = np.cumsum(np.ones_like(x), axis=-1)
    s, q = np.cumsum(x, axis=-1), np.cumsum(x * x, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        nu = n - 1
        ready = nu >= 1
        var = np.where(ready, np.maximum(q - n * mean * mean, 0.0) / nu, np.nan)
        se = np.sqrt(var / n)
        est = np.where(ready, mean, np.nan)
        t2 = np.where(se > 0, (est / se) ** 2, np.where(est == 0, 0.0, np.inf))
        log_bf = np.where(ready, t_mixture_log_bf(t2, nu, n, mixture_sd), np.nan)
        radius = np.where(ready, t_mixture_radius(se, nu, n, alpha, mixture_sd), np.inf)
    p, low, high = _running(log_bf, est, radius)
    return {"estimate": est, "log_bf": log_bf, "p": p, "low": low, "high": high}


def _result(paths: dict[str, Floats], n: int, alpha: float, sd: float) -> SequentialResult:
    def last(key: str) -> float | None:
        value = float(paths[key][-1]) if n else math.nan
        return value if math.isfinite(value) else None

    log_bf = float(paths["log_bf"][-1]) if n else math.nan
    return SequentialResult(
        MEANS_METHOD, n, last("estimate"), last("low"), last("high"),
        float(paths["p"][-1]) if n else 1.0, log_bf if math.isfinite(log_bf) else 0.0,
        alpha, {"mixture_sd": sd},
    )  # fmt: skip


def two_sample(
    values: Sequence[float],
    is_b: Sequence[bool],
    *,
    alpha: float = ALPHA,
    mixture_sd: float = MIXTURE_SD,
) -> SequentialResult:
    """mean(b) - mean(a) over observations in the order they became known."""
    paths = two_sample_paths(values, is_b, alpha=alpha, mixture_sd=mixture_sd)
    return _result(paths, len(values), alpha, mixture_sd)


def one_sample(
    values: Sequence[float], *, alpha: float = ALPHA, mixture_sd: float = MIXTURE_SD
) -> SequentialResult:
    """The mean of `values` (e.g. paired differences, in order) against 0."""
    return _result(one_sample_paths(values, alpha=alpha, mixture_sd=mixture_sd),
                   len(values), alpha, mixture_sd)  # fmt: skip


def rate_above_log_lr(y: ArrayLike, p0: ArrayLike, ratios: Sequence[float] = ODDS_RATIOS) -> Floats:
    """log likelihood-ratio path of Bernoulli outcomes `y` (last axis) with null rates `p0`
    against the equally weighted mixture of odds ratios `ratios` over p0.

    Each term is a supermartingale under any rate <= p0, so the mixture tests
    "rate <= p0" one-sidedly; p0 may differ per observation (it must be known before it).
    """
    yy = np.asarray(y, dtype=float)
    p = np.broadcast_to(np.clip(np.asarray(p0, dtype=float), 1e-12, 1 - 1e-12), yy.shape)
    rho = np.asarray(ratios, dtype=float).reshape((-1,) + (1,) * yy.ndim)
    q = p * rho / (p * rho + 1 - p)
    steps = yy * np.log(q / p) + (1 - yy) * np.log((1 - q) / (1 - p))
    return np.asarray(logsumexp(np.cumsum(steps, axis=-1), axis=0) - math.log(len(ratios)))


def rate_above(
    y: Sequence[bool] | Sequence[int],
    p0: float | Sequence[float],
    *,
    alpha: float = ALPHA,
    ratios: Sequence[float] = ODDS_RATIOS,
) -> SequentialResult:
    """Is the rate of `y` above p0? `estimate` is the observed rate; no interval."""
    n = len(y)
    if n == 0:
        return SequentialResult(RATES_METHOD, 0, None, None, None, 1.0, 0.0, alpha, {})
    log_lr = rate_above_log_lr(y, p0, ratios)
    p = float(min(1.0, math.exp(-max(0.0, float(np.max(log_lr))))))
    null = float(np.mean(p0)) if not isinstance(p0, float | int) else float(p0)
    return SequentialResult(
        RATES_METHOD, n, float(np.mean(y)), None, None, p, float(log_lr[-1]), alpha,
        {"null_rate": null, "odds_ratios": len(ratios)},
    )  # fmt: skip
