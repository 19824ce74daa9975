"""Plain-text rendering of the A/B report for `advisor report`."""

from __future__ import annotations

from jobs.analysis import DIMENSIONS
from producers.ops.report import Report, Spread
from producers.ops.sequential import MIN_PAIRS, MIN_PER_ARM, MIXTURE_SD
from producers.ops.srm import SRM_ALPHA
from producers.ops.stats import ALPHA
from producers.ops.verdicts import MIN_RATINGS_PER_ARM, PairedStat


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


def _interval(low: float | None, high: float | None, fmt: str = "+.2f") -> str:
    return f"[{_num(low, fmt)}, {_num(high, fmt)}]"


def _verdicts(report: Report) -> list[str]:
    lines = [
        f"Verdicts: what decides (variant - base; always-valid estimate, confidence sequence "
        f"and p, alpha {ALPHA}, readable after every job; silent below {MIN_PER_ARM} per arm "
        f"or {MIN_PAIRS} pairs; metric: feedback with >= {MIN_RATINGS_PER_ARM} ratings per "
        f"arm, else shadow pairs (>= {MIN_PAIRS}), else overall_score):"
    ]
    for v in report.verdicts:
        lines.append(
            f"  {v.advisor:<12}{v.variant:<14}on {v.metric} by {v.method} "
            f"(mixture sd {MIXTURE_SD:g}): n {v.n_variant} vs {v.n_base}  "
            f"diff {_num(v.estimate, '+.2f')} {_interval(v.ci_low, v.ci_high)}  "
            f"p {_num(v.p, '.3g')}  -> {v.decision}"
        )
        lines.append(f"  {'':<26}why this metric: {v.why}")
        flag = "ok" if v.guardrails_ok else "BREACHED"
        lines.append(f"  {'':<26}guardrails {flag} (always-valid, split jobs):")
        lines += [f"  {'':<28}{c.describe()}" for c in v.guardrails]
    if not report.verdicts:
        lines.append("  no split traffic or shadow pairs on a non-base variant")
    return lines


def _feedback(report: Report) -> list[str]:
    lines = [
        "Feedback (the app's users' ratings 1-5 of primary jobs' critiques; "
        "simulated = demo raters, not people):",
        f"  {'variant':<14}{'ratings':>8}{'simulated':>10}  {'mean rating [95% CI]':<22}"
        f"{'helpful [95% CI]':<24}{'answers':>8}",
    ]
    for f in report.feedback:
        r = f.rating
        helpful = f"{_pct(f.helpful_rate)} [{_pct(f.helpful_ci_low)}, {_pct(f.helpful_ci_high)}]"
        lines.append(
            f"  {f.variant:<14}{f.ratings:>8}{f.simulated:>10}  "
            f"{_num(r.mean)} {_interval(r.ci_low, r.ci_high, '.2f'):<17}{helpful:<24}"
            f"{f.helpful_answers:>8}"
        )
    if not any(f.ratings for f in report.feedback):
        lines.append(
            "  no feedback yet (POST /jobs/{id}/feedback, Client.feedback, advisor feedback)"
        )
    return lines


def _paired_row(stat: PairedStat) -> str:
    d = stat.descriptive
    return (
        f"    {stat.name:<22}{_num(stat.mean_difference, '+.2f'):>7} "
        f"{_interval(stat.sequence_low, stat.sequence_high):<17}"
        f"{_num(stat.sequential_p, '.3g'):>8}{_pct(stat.candidate_higher):>8}"
        f"{_pct(stat.candidate_lower):>8}   "
        f"{_interval(d.paired_t_low, d.paired_t_high):<29}{_num(d.wilcoxon_p, '.3g'):>10}"
    )


def _paired(report: Report) -> list[str]:
    lines = [
        "Paired shadow runs (the same photo through both arms; candidate - base). The "
        "always-valid interval and p are what the verdict reads; the columns after "
        "'descriptive' (paired t, Wilcoxon signed-rank) are fixed-horizon, valid only if read "
        "once, and never a verdict:"
    ]
    for p in report.paired:
        lines.append(f"  {p.advisor:<12}{p.variant:<14}{p.pairs} pairs")
        lines.append(
            f"    {'score':<22}{'diff':>7} {'[always-valid]':<17}{'p':>8}{'higher':>8}"
            f"{'lower':>8}   {'descriptive: [paired t 95%]':<29}{'Wilcoxon p':>10}"
        )
        lines += [_paired_row(stat) for stat in (p.overall, *p.dimensions)]
    if not report.paired:
        lines.append("  no shadow pairs (advisor rollout set ... --shadow F)")
    return lines


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
    lines += [*_verdicts(report), ""]
    lines.append(
        f"{'variant':<14}{'routed':>7}{'started':>8}{'done':>6}{'in-flight':>10}{'cancel':>7}"
        f"{'fail':>7}"
        f"{'invalid':>8}  {'score [95% CI]':<21}{'n':>5}  {'wait p50/p95 s':>15}"
        f"{'infer p50/p95 s':>16}{'tok/s':>7}{'shadow':>8}"
    )
    for v in report.variants:
        s = v.score
        ci = f"{_num(s.mean)} [{_num(s.ci_low)}, {_num(s.ci_high)}]"
        lines.append(
            f"{v.variant:<14}{v.routed:>7}{v.started:>8}{v.finished:>6}{v.in_flight:>10}"
            f"{v.cancelled:>7}{_pct(v.failure_rate):>7}{_pct(v.invalid_output_rate):>8}  "
            f"{ci:<21}{s.n:>5}  "
            f"{_seconds(v.queue_wait_ms):>15}{_seconds(v.inference_ms):>16}"
            f"{_num(v.tokens_per_second, '.1f'):>7}{v.shadow_jobs:>8}"
        )
    lines.append("(primary jobs only; `shadow`: shadow jobs run on the variant, outside the split)")
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

    lines += ["", *_feedback(report), "", *_paired(report)]
    lines += [
        "",
        "Variant - base on unpaired overall_score (split jobs, per advisor; always-valid; the "
        "verdict's metric only when it says overall_score above; Welch is descriptive: "
        "fixed-horizon, valid only if read once):",
    ]
    for c in report.comparisons:
        diff = f"{_num(c.difference, '+.2f')} {_interval(c.sequence_low, c.sequence_high)}"
        w = c.descriptive
        lines.append(
            f"  {c.advisor:<12}{c.variant:<14}n {c.n_variant} vs {c.n_base}  diff {diff}  "
            f"p {_num(c.sequential_p, '.3g')}  -> {c.verdict}  (descriptive: Welch "
            f"{_interval(w.ci_low, w.ci_high)} t {_num(w.t)} p {_num(w.p, '.3g')})"
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
