"""The report judges an exposed candidate on the guard's sequence, as its plan does."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from jobs.clock import utcnow
from producers.ops.evidence import exposure_verdicts
from producers.ops.plan_gate import check_gate
from producers.ops.report import build_report
from tests.producers.ops.test_plans import control, start


def test_the_reports_verdict_reads_the_exposure_not_its_window_and_agrees_with_the_plan(
    migrated_url: str, registry_file: Path
) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = start(plans)  # the exposure of fine_tuned begins now
    ids = {}
    for variant, base_score in (("fine_tuned", 6), ("base", 6)):
        ids[variant] = crafter.queue(30, variant=variant, weights_version=plan.weights_version)
        for i, job_id in enumerate(ids[variant]):
            crafter.succeed(job_id, (base_score + i % 3,) * 7)
    # Queued three days ago, finished since the exposure began: outside a 1-day report window.
    early = ids["fine_tuned"][:10] + ids["base"][:10]
    crafter.set_times(early, queued_at=utcnow() - timedelta(days=3))
    now = utcnow() + timedelta(minutes=1)

    report = build_report(crafter.engine, days=1, advisor="ansel", now=now)
    verdict = next(v for v in report.verdicts if v.variant == "fine_tuned")
    gate = check_gate(crafter.engine, plans.show("ansel"), now)

    assert "over its exposure since" in verdict.why
    # Read from the report's rows plus those queued before its window: as a fresh read.
    assert verdict == exposure_verdicts(crafter.engine, "ansel", now)["fine_tuned"]
    assert (verdict.n_variant, verdict.n_base) == (30, 30)  # the window alone holds 20 + 20
    assert report.total_jobs == 40
    assert (verdict.estimate, verdict.ci_low, verdict.ci_high) == (
        gate.statistics["estimate"], gate.statistics["ci_low"], gate.statistics["ci_high"],
    )  # fmt: skip


def test_a_candidate_without_rollout_history_keeps_the_windows_verdict(
    migrated_url: str, registry_file: Path
) -> None:
    _, crafter = control(migrated_url, registry_file)
    for variant in ("fine_tuned", "base"):
        for i, job_id in enumerate(crafter.queue(25, variant=variant)):
            crafter.succeed(job_id, (6 + i % 3,) * 7)
    report = build_report(crafter.engine, days=1, advisor="ansel")
    verdict = next(v for v in report.verdicts if v.variant == "fine_tuned")
    assert "exposure" not in verdict.why and (verdict.n_variant, verdict.n_base) == (25, 25)
