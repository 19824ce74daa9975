"""Plain-text rendering of the A/B report for `advisor report`."""

from __future__ import annotations

from jobs.analysis import DIMENSIONS
from producers.ops.report import Report, Spread
from producers.ops.srm import SRM_ALPHA
from producers.ops.stats import ALPHA


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _seconds(spread: Spread) -> str:
    if spread.p50 is None or spread.p95 is None:
        return "-"
    return f"{spread.p50 / 1000:.1f}/{spread.p95 / 1000:.1f}"


def _weights(weights: dict[str, float]) -> str:
    return " ".join(f"{v} {w:.2f}" for v, w in weights.items())


def render_report(report: Report) -> str:
    """A readable text report; every section says what it is computed over."""
    lines = [
        f"A/B report: jobs queued {report.since:%Y-%m-%d %H:%M} .. "
        f"{report.generated_at:%Y-%m-%d %H:%M} UTC ({report.days:g} days), "
        f"advisor {report.advisor or 'all'}, {report.total_jobs} jobs",
        "",
    ]
    if not report.variants:
        return "\n".join([*lines, "No jobs in this window."])
    lines.append(
        f"{'variant':<14}{'routed':>7}{'started':>8}{'done':>6}{'in-flight':>10}{'cancel':>7}"
        f"{'fail':>7}"
        f"{'invalid':>8}  {'score [95% CI]':<21}{'n':>5}  {'wait p50/p95 s':>15}"
        f"{'infer p50/p95 s':>16}{'tok/s':>7}"
    )
    for v in report.variants:
        s = v.score
        ci = f"{_num(s.mean)} [{_num(s.ci_low)}, {_num(s.ci_high)}]"
        lines.append(
            f"{v.variant:<14}{v.routed:>7}{v.started:>8}{v.finished:>6}{v.in_flight:>10}"
            f"{v.cancelled:>7}{_pct(v.failure_rate):>7}{_pct(v.invalid_output_rate):>8}  "
            f"{ci:<21}{s.n:>5}  "
            f"{_seconds(v.queue_wait_ms):>15}{_seconds(v.inference_ms):>16}"
            f"{_num(v.tokens_per_second, '.1f'):>7}"
        )
    failures = [
        f"{v.variant}: " + ", ".join(f"{k} {n}" for k, n in v.failed.items())
        for v in report.variants
        if v.failed
    ]
    lines += ["", "Failures by kind: " + ("; ".join(failures) if failures else "none")]

    lines += ["", f"{'Dimension means':<22}" + "".join(f"{v.variant:>14}" for v in report.variants)]
    for name in DIMENSIONS:
        cells = "".join(f"{_num(v.dimension_means.get(name)):>14}" for v in report.variants)
        lines.append(f"{name:<22}{cells}")

    lines += [
        "",
        f"Variant - base on overall_score (split jobs, per advisor; Welch, alpha {ALPHA}):",
    ]
    for c in report.comparisons:
        diff = f"{_num(c.difference, '+.2f')} [{_num(c.ci_low, '+.2f')}, {_num(c.ci_high, '+.2f')}]"
        lines.append(
            f"  {c.advisor:<12}{c.variant:<14}n {c.n_variant} vs {c.n_base}  diff {diff}  "
            f"t {_num(c.t)}  p {_num(c.p, '.3g')}  -> {c.verdict}"
        )
    if not report.comparisons:
        lines.append("  no split traffic on a non-base variant")

    lines += ["", f"Sample ratio (split jobs vs configured weights; flag p < {SRM_ALPHA}):"]
    for m in report.srm:
        observed = " ".join(f"{v} {n}" for v, n in m.observed.items())
        weights = _weights(m.weights) if m.weights is not None else "unknown"
        verdict = "SAMPLE RATIO MISMATCH: " + m.note if m.is_mismatch else m.note
        lines.append(
            f"  {m.advisor:<12}v{m.weights_version:<4}{m.stage:<9}{observed:<28}"
            f"(weights {weights})  p {_num(m.p, '.3g')}  {verdict}"
        )
    if not report.srm:
        lines.append("  no split traffic")

    lines += ["", "Score copy (successful outputs whose 7 scores equal another output's):"]
    for copy in report.score_copy:
        common = ", ".join("-".join(map(str, t)) + f" x{n}" for t, n in copy.most_common)
        flag = "  SUSPICIOUS: outputs look copied" if copy.is_suspicious else ""
        lines.append(
            f"  {copy.scope:<14}{copy.copied} / {copy.outputs} ({_pct(copy.share)})"
            + (f"  most common {common}" if common else "")
            + flag
        )

    lines += ["", "By model_used (the seed's compare_model_performance, completed in window):"]
    for model_used, count, score, secs in report.model_performance:
        lines.append(
            f"  {model_used:<20}{count:>6}  avg score {_num(score)}  "
            f"avg duration {_num(secs, '.1f')} s"
        )
    return "\n".join(lines)
