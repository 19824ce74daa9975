"""Always-valid inference: mSPRT for means, an odds-ratio mixture SPRT for rates.

Every test is a (possibly asymptotic) test martingale under its null, so by Ville's
inequality the chance that it *ever* reaches 1/alpha is at most alpha: a verdict may be
read after every job, for weeks.

- Two samples (`two_sample`): the normal-mixture mSPRT on the difference of means with the
  plug-in Welch variance V = s_a^2/n_a + s_b^2/n_b (Johari, Koomen, Pekelis, Walsh, "Always
  Valid Inference: Continuous Monitoring of A/B Tests", Operations Research 70(3), 2022).
  Unequal variances and unequal splits (a 10% canary with a wider spread) keep it valid;
  the plug-in makes it asymptotic, hence MIN_PER_ARM observations per arm before it speaks.
  The mixture N(0, tau^2) has tau = MIXTURE_SD times the arms' pooled sd.
- One sample (`one_sample`, e.g. paired differences): the t-mixture (Gönen et al. 2005,
  Lindon et al. 2024) with the scale-invariant prior on the variance, exact under normal
  errors; MIN_PAIRS pairs before it speaks, for skewed differences.
- Rates (`rate_above`): Bernoulli outcomes against a null rate p0 (one per observation),
  mixed over the odds ratios ODDS_RATIOS > 1: one-sided and exact at every n.
The inversions are confidence sequences (running intersections). Sums are taken after a
shift by the first observation, so values near 1e12 behave like values near 0; NaN and
infinity are refused (NonFiniteValue), and rate outcomes must be 0 or 1 (NotBinary).
The minimums were chosen by simulation: docs/statistics.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from producers.errors import NonFiniteValue, NotBinary

ALPHA = 0.05
# The mixture's sd of the standardised effect (difference / sd of one observation): tuned for
# effects of a third of an sd at a few hundred jobs per arm.
MIXTURE_SD = 0.3
# Alternatives of the rate tests, as odds ratios over the null rate, equally weighted.
ODDS_RATIOS = (1.5, 2.0, 3.0, 5.0, 10.0)
# Below these the plug-in variance (and skewed pairs) can fake evidence: docs/statistics.md.
MIN_PER_ARM = 20
MIN_PAIRS = 60

MEANS_METHOD = "sequential (mSPRT, Welch variance)"
PAIRED_METHOD = "sequential (mSPRT, t-mixture)"
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


def finite(values: ArrayLike, what: str = "observations") -> Floats:
    """`values` as floats, refusing NaN and infinity at the boundary."""
    x = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(x)):
        bad = x[~np.isfinite(x)].ravel()[:3].tolist()
        raise NonFiniteValue(f"{what} must be finite numbers; got {bad} among {x.size}")
    return x


def binary(values: ArrayLike, what: str = "outcomes") -> Floats:
    """0/1 outcomes as floats; anything else (7, 0.5, NaN) is refused."""
    y = np.asarray(values, dtype=float)
    if not np.all((y == 0) | (y == 1)):
        bad = y[(y != 0) & (y != 1)].ravel()[:3].tolist()
        raise NotBinary(f"{what} of a rate must be 0 or 1; got {bad}")
    return y


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


def normal_mixture_log_bf(t2: ArrayLike, r: ArrayLike) -> Floats:
    """log Bayes factor of the normal mixture for z^2 = `t2` (estimate^2 / V), with
    r = V / (V + tau^2); `t2` may be infinite (no spread but a difference)."""
    t2, r = np.asarray(t2, dtype=float), np.asarray(r, dtype=float)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return np.asarray(0.5 * np.log(r) + 0.5 * (1 - r) * t2, dtype=float)


def normal_mixture_radius(v: ArrayLike, r: ArrayLike, alpha: float) -> Floats:
    """Half-width of the normal mixture's confidence sequence at variance `v`."""
    v, r = np.asarray(v, dtype=float), np.asarray(r, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.sqrt(v * (2 * math.log(1 / alpha) - np.log(r)) / (1 - r)))


def _shifted(x: Floats) -> Floats:
    # Sums of squares around the first observation: no cancellation at large offsets.
    return x - x[..., :1] if x.shape[-1] else x


def two_sample_paths(
    values: ArrayLike,
    is_b: ArrayLike,
    *,
    alpha: float = ALPHA,
    mixture_sd: float = MIXTURE_SD,
    min_per_arm: int = MIN_PER_ARM,
) -> dict[str, Floats]:
    """The test of mean(b) - mean(a) after every observation, along the last axis.

    `values` and `is_b` have the same shape (..., n): observations in the order they became
    known, and which arm each belongs to. Vectorised over leading axes (experiments).
    Welch variance; silent (p 1, no interval) until both arms have `min_per_arm`.
    """
    x = _shifted(finite(values))
    b = np.asarray(is_b, dtype=bool)
    nb = np.cumsum(b, axis=-1).astype(float)
    na = np.cumsum(~b, axis=-1).astype(float)
    sb, sa = np.cumsum(np.where(b, x, 0.0), axis=-1), np.cumsum(np.where(b, 0.0, x), axis=-1)
    qb = np.cumsum(np.where(b, x * x, 0.0), axis=-1)
    qa = np.cumsum(np.where(b, 0.0, x * x), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mb, ma = sb / nb, sa / na
        ssb, ssa = np.maximum(qb - sb * mb, 0.0), np.maximum(qa - sa * ma, 0.0)
        ready = (na >= max(min_per_arm, 2)) & (nb >= max(min_per_arm, 2))
        est = np.where(ready, mb - ma, np.nan)
        v = ssb / (nb - 1) / nb + ssa / (na - 1) / na
        pooled = (ssa + ssb) / (na + nb - 2)
        # r = V / (V + tau^2); with no spread at all, the equal-variance limit n_a n_b / n.
        size = np.where(v > 0, pooled / v, na * nb / (na + nb))
        r = 1.0 / (1.0 + mixture_sd**2 * size)
        t2 = np.where(v > 0, est * est / v, np.where(est == 0, 0.0, np.inf))
        log_bf = np.where(ready, normal_mixture_log_bf(t2, r), np.nan)
        radius = np.where(ready, normal_mixture_radius(v, r, alpha), np.inf)
    p, low, high = _running(log_bf, est, radius)
    return {"estimate": est, "log_bf": log_bf, "p": p, "low": low, "high": high}


def one_sample_paths(
    values: ArrayLike,
    *,
    alpha: float = ALPHA,
    mixture_sd: float = MIXTURE_SD,
    min_n: int = MIN_PAIRS,
) -> dict[str, Floats]:
    """The test of mean = 0 (e.g. paired differences) after every observation, last axis;
    silent (p 1, no interval) before `min_n` observations."""
    raw = finite(values)
    x = _shifted(raw)
    n = np.cumsum(np.ones_like(x), axis=-1)
    s, q = np.cumsum(x, axis=-1), np.cumsum(x * x, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n + (raw[..., :1] if raw.shape[-1] else 0.0)
        nu = n - 1
        ready = (nu >= 1) & (n >= min_n)
        var = np.where(ready, np.maximum(q - s * s / n, 0.0) / nu, np.nan)
        se = np.sqrt(var / n)
        est = np.where(ready, mean, np.nan)
        t2 = np.where(se > 0, (est / se) ** 2, np.where(est == 0, 0.0, np.inf))
        log_bf = np.where(ready, t_mixture_log_bf(t2, nu, n, mixture_sd), np.nan)
        radius = np.where(ready, t_mixture_radius(se, nu, n, alpha, mixture_sd), np.inf)
    p, low, high = _running(log_bf, est, radius)
    return {"estimate": est, "log_bf": log_bf, "p": p, "low": low, "high": high}


def _result(
    method: str, paths: dict[str, Floats], n: int, alpha: float, parameters: dict[str, float]
) -> SequentialResult:
    def last(key: str) -> float | None:
        value = float(paths[key][-1]) if n else math.nan
        return value if math.isfinite(value) else None

    log_bf = float(paths["log_bf"][-1]) if n else math.nan
    return SequentialResult(
        method, n, last("estimate"), last("low"), last("high"),
        float(paths["p"][-1]) if n else 1.0, log_bf if math.isfinite(log_bf) else 0.0,
        alpha, parameters,
    )  # fmt: skip


def two_sample(
    values: Sequence[float],
    is_b: Sequence[bool],
    *,
    alpha: float = ALPHA,
    mixture_sd: float = MIXTURE_SD,
    min_per_arm: int = MIN_PER_ARM,
) -> SequentialResult:
    """mean(b) - mean(a) over observations in the order they became known."""
    paths = two_sample_paths(values, is_b, alpha=alpha, mixture_sd=mixture_sd,
                             min_per_arm=min_per_arm)  # fmt: skip
    params = {"mixture_sd": mixture_sd, "min_per_arm": float(min_per_arm)}
    return _result(MEANS_METHOD, paths, len(values), alpha, params)


def one_sample(
    values: Sequence[float],
    *,
    alpha: float = ALPHA,
    mixture_sd: float = MIXTURE_SD,
    min_n: int = MIN_PAIRS,
) -> SequentialResult:
    """The mean of `values` (e.g. paired differences, in order) against 0."""
    paths = one_sample_paths(values, alpha=alpha, mixture_sd=mixture_sd, min_n=min_n)
    params = {"mixture_sd": mixture_sd, "min_n": float(min_n)}
    return _result(PAIRED_METHOD, paths, len(values), alpha, params)


def rate_above_log_lr(y: ArrayLike, p0: ArrayLike, ratios: Sequence[float] = ODDS_RATIOS) -> Floats:
    """log likelihood-ratio path of Bernoulli outcomes `y` (last axis) with null rates `p0`
    against the equally weighted mixture of odds ratios `ratios` over p0.

    Each term is a supermartingale under any rate <= p0, so the mixture tests
    "rate <= p0" one-sidedly; p0 may differ per observation (it must be known before it).
    """
    yy = binary(y)
    p = np.broadcast_to(np.clip(finite(p0, "null rates"), 1e-12, 1 - 1e-12), yy.shape)
    rho = np.asarray(ratios, dtype=float).reshape((-1,) + (1,) * yy.ndim)
    q = p * rho / (p * rho + 1 - p)
    steps = yy * np.log(q / p) + (1 - yy) * np.log((1 - q) / (1 - p))
    from scipy.special import logsumexp  # lazily, as scipy.stats elsewhere

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
        RATES_METHOD, n, float(np.mean(binary(y))), None, None, p, float(log_lr[-1]), alpha,
        {"null_rate": null, "odds_ratios": len(ratios)},
    )  # fmt: skip
