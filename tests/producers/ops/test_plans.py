"""Rollout plans over crafted job rows: advance, hold, roll back, pause, resume, abort, races."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from jobs.clock import utcnow
from jobs.contracts import ErrorKind
from jobs.variants import Registry, load_registry
from producers.errors import InvalidPlan, PlanConflict, PlanNotFound
from producers.ops.guard import enforce, evaluate
from producers.ops.plan_gate import check_gate, parse_steps
from producers.ops.plan_rounds import STEP_KIND
from producers.ops.plans import PlanControl
from producers.ops.sequential import MIN_PER_ARM
from producers.plans import Plan, PlanStatus, PlanStore
from producers.rollouts import RolloutStore
from store.db import engine_for
from tests.producers.crafted_jobs import Crafter

LATER = timedelta(minutes=30)


def control(url: str, registry_file: Path, **kwargs: object) -> tuple[PlanControl, Crafter]:
    engine = engine_for(url)
    registry: Registry = load_registry(registry_file, "test-model")
    store = RolloutStore(engine)
    return PlanControl(engine, registry, store, PlanStore(engine), **kwargs), Crafter(engine)  # type: ignore[arg-type]


def start(plans: PlanControl, **kwargs: object) -> Plan:
    values: dict[str, object] = {"min_jobs": 20, "min_minutes": 10, "margin": 1.0} | kwargs
    return plans.create("ansel", "fine_tuned", (5, 25, 50, 100), reason="canary", actor="op",
                        **values)  # type: ignore[arg-type]  # fmt: skip


def evidence(crafter: Crafter, plan: Plan, variant: str, scores: list[int],
             failures: int = 0) -> None:  # fmt: skip
    """Finished split jobs of `variant` routed at the plan's current weights version."""
    ids = crafter.queue(len(scores) + failures, variant=variant,
                        weights_version=plan.weights_version)  # fmt: skip
    for job_id, score in zip(ids, scores, strict=False):
        crafter.succeed(job_id, (score,) * 7, inference_ms=30_000)
    for job_id in ids[len(scores) :]:
        crafter.fail(job_id, ErrorKind.TIMEOUT)


def alike(n: int) -> list[int]:
    return [6 + i % 2 for i in range(n)]


def test_creating_a_plan_applies_its_first_step_as_a_rollout_event(
    migrated_url: str, registry_file: Path
) -> None:
    plans, _ = control(migrated_url, registry_file)
    plan = start(plans)
    assert (plan.status, plan.step, plan.percent) == (PlanStatus.ACTIVE, 0, 5.0)
    weights = plans.rollouts.get("ansel")
    assert weights.weights == {"base": 0.95, "fine_tuned": 0.05}
    assert plan.weights_version == weights.version
    event = plans.rollouts.history("ansel", limit=1)[0]
    assert (event.kind, event.details["plan"], event.details["percent"]) == (STEP_KIND, plan.id, 5)
    assert plan.details["workers"]["fine_tuned"] >= 1


@pytest.mark.parametrize(
    ("steps", "message"),
    [("25,5", "must increase"), ("0,50", "(0, 100]"), ("50,120", "(0, 100]"), ("a,b", "percent")],
)
def test_steps_that_do_not_increase_within_0_and_100_are_refused(steps: str, message: str) -> None:
    with pytest.raises(InvalidPlan, match=re.escape(message)):
        parse_steps(steps)


def test_unknown_variants_advisors_and_a_second_open_plan_are_refused(
    migrated_url: str, registry_file: Path
) -> None:
    plans, _ = control(migrated_url, registry_file)
    with pytest.raises(InvalidPlan, match="Unknown candidate 'nope'"):
        plans.create("ansel", "nope", (5, 100), reason="r", actor="op")
    with pytest.raises(InvalidPlan, match="Unknown candidate 'base'"):
        plans.create("ansel", "base", (5, 100), reason="r", actor="op")
    with pytest.raises(Exception, match="nobody"):
        plans.create("nobody", "fine_tuned", (5, 100), reason="r", actor="op")
    start(plans)
    with pytest.raises(PlanConflict, match="already has an open rollout plan"):
        start(plans)


def test_a_step_with_enough_jobs_time_and_a_non_inferior_metric_advances(
    migrated_url: str, registry_file: Path
) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = start(plans)
    evidence(crafter, plan, "base", alike(60))
    evidence(crafter, plan, "fine_tuned", alike(40))

    [after] = plans.step_all(now=utcnow() + LATER)

    assert (after.step, after.percent, after.status) == (1, 25.0, PlanStatus.ACTIVE)
    assert plans.rollouts.get("ansel").weights == {"base": 0.75, "fine_tuned": 0.25}
    event = plans.rollouts.history("ansel", limit=1)[0]
    stats = event.details["statistics"]
    assert (event.kind, event.actor, event.details["step"]) == (STEP_KIND, "guard", 1)
    assert stats["candidate_jobs"] == 40 and stats["guardrails_ok"] is True
    assert stats["ci_low"] >= -1.0 and stats["metric"] == "overall_score"
    assert after.weights_version == event.version
    assert "waiting for evidence" in after.state


def test_too_few_jobs_hold_the_step_and_say_so(migrated_url: str, registry_file: Path) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = start(plans)
    evidence(crafter, plan, "base", alike(30))
    evidence(crafter, plan, "fine_tuned", alike(10))
    [after] = plans.step_all(now=utcnow() + LATER)
    assert after.step == 0
    assert "holding at 5%: 10 of 20 finished fine_tuned jobs" in after.state
    assert after.details["last_check"]["candidate_jobs"] == 10


def test_a_silent_verdict_holds_the_step_and_says_how_many_more_jobs_each_arm_needs(
    migrated_url: str, registry_file: Path
) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = start(plans, min_jobs=5)
    evidence(crafter, plan, "base", alike(MIN_PER_ARM + 10))
    evidence(crafter, plan, "fine_tuned", alike(MIN_PER_ARM - 8))
    [after] = plans.step_all(now=utcnow() + LATER)
    assert after.step == 0 and after.details["last_check"]["estimate"] is None
    assert (f"silent below {MIN_PER_ARM} scored jobs per arm: needs 8 more fine_tuned "
            "and 0 more base jobs") in after.state  # fmt: skip


def test_after_a_step_the_plan_counts_the_steps_jobs_but_judges_the_guards_whole_sequence(
    migrated_url: str, registry_file: Path
) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = start(plans)
    evidence(crafter, plan, "base", alike(60))
    evidence(crafter, plan, "fine_tuned", alike(40))
    [at25] = plans.step_all(now=utcnow() + LATER)
    evidence(crafter, at25, "base", alike(6))
    evidence(crafter, at25, "fine_tuned", alike(4))
    now = utcnow() + LATER

    stats = check_gate(plans.engine, at25, now).statistics
    [decision] = evaluate(plans.engine, plans.rollouts, "ansel", now=now)

    assert (stats["candidate_jobs"], stats["base_jobs"]) == (4, 6)
    assert (stats["exposure_candidate_jobs"], stats["exposure_base_jobs"]) == (44, 66)
    assert decision.variant_stats.completed == 44 and decision.base_stats.completed == 66
    assert decision.sequence_start is not None
    assert stats["exposure_start"] == decision.sequence_start.isoformat()


def test_too_little_time_holds_the_step(migrated_url: str, registry_file: Path) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = start(plans)
    evidence(crafter, plan, "base", alike(60))
    evidence(crafter, plan, "fine_tuned", alike(40))
    [after] = plans.step_all(now=utcnow() + timedelta(minutes=2))
    assert after.step == 0 and "of 10 minutes" in after.state


def test_an_interval_reaching_below_the_margin_holds_the_step(
    migrated_url: str, registry_file: Path
) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = start(plans)
    evidence(crafter, plan, "base", alike(60))
    evidence(crafter, plan, "fine_tuned", [3 + i % 2 for i in range(40)])
    [after] = plans.step_all(now=utcnow() + LATER)
    assert after.step == 0
    assert "overall_score interval [" in after.state and "reaches below -1" in after.state
    assert after.details["last_check"]["ci_low"] < -1.0


def test_a_guardrail_breach_holds_the_step(migrated_url: str, registry_file: Path) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = start(plans)
    evidence(crafter, plan, "base", alike(60))
    evidence(crafter, plan, "fine_tuned", alike(22), failures=10)
    [after] = plans.step_all(now=utcnow() + LATER)
    assert after.step == 0 and "guardrail breached: failure rate" in after.state


def test_a_guard_rollback_ends_the_plan_as_rolled_back(
    migrated_url: str, registry_file: Path
) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = start(plans)
    evidence(crafter, plan, "base", alike(60))
    evidence(crafter, plan, "fine_tuned", alike(22), failures=10)

    [decision] = enforce(plans.engine, plans.rollouts, plans.registry, plans=plans)

    assert decision.applied
    after = plans.show("ansel")
    assert after.status is PlanStatus.ROLLED_BACK and "rolled back at 5%: guard:" in after.state
    assert plans.plans.open("ansel") is None
    assert plans.rollouts.get("ansel").weights["fine_tuned"] == 0.0


def test_pause_holds_resume_reapplies_the_step_and_abort_sends_the_candidate_to_zero(
    migrated_url: str, registry_file: Path
) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = start(plans)
    paused = plans.pause("ansel", reason="look first", actor="op")
    assert paused.status is PlanStatus.PAUSED and "paused by op: look first" in paused.state
    evidence(crafter, plan, "base", alike(60))
    evidence(crafter, plan, "fine_tuned", alike(40))
    [still] = plans.step_all(now=utcnow() + LATER)
    assert (still.status, still.step) == (PlanStatus.PAUSED, 0)

    resumed = plans.resume("ansel", reason="fine", actor="op")
    assert resumed.status is PlanStatus.ACTIVE and resumed.weights_version > plan.weights_version
    # The step's count restarts at the re-applied weights: the old jobs do not count.
    [held] = plans.step_all(now=utcnow() + LATER)
    assert held.step == 0 and "0 of 20 finished" in held.state

    aborted = plans.abort("ansel", reason="changed my mind", actor="op")
    assert aborted.status is PlanStatus.ABORTED and "changed my mind" in aborted.state
    assert plans.rollouts.get("ansel").weights == {"base": 1.0, "fine_tuned": 0.0}
    assert plans.rollouts.history("ansel", limit=1)[0].kind == "plan-abort"
    with pytest.raises(PlanNotFound):
        plans.pause("ansel", reason="x", actor="op")


def test_an_operators_manual_set_pauses_the_plan_and_says_so(
    migrated_url: str, registry_file: Path
) -> None:
    plans, _ = control(migrated_url, registry_file)
    start(plans)
    weights = plans.rollouts.set("ansel", {"base": 0.8, "fine_tuned": 0.2},
                                 known_variants={"base", "fine_tuned"}, actor="op",
                                 reason="by hand")  # fmt: skip
    paused = plans.on_manual_change(weights, "op")
    assert paused is not None and paused.status is PlanStatus.PAUSED
    assert "paused: weights set by op at v" in paused.state and "(by hand)" in paused.state


def test_weights_changed_behind_the_plans_back_pause_it_on_the_next_round(
    migrated_url: str, registry_file: Path
) -> None:
    plans, _ = control(migrated_url, registry_file)
    start(plans)
    plans.rollouts.set("ansel", {"base": 0.8, "fine_tuned": 0.2},
                       known_variants={"base", "fine_tuned"}, actor="old-producer",
                       reason="by hand")  # fmt: skip
    [after] = plans.step_all(now=utcnow() + LATER)
    assert after.status is PlanStatus.PAUSED and "old-producer" in after.state


def test_two_guards_at_once_advance_the_plan_exactly_once(
    migrated_url: str, registry_file: Path
) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = start(plans)
    evidence(crafter, plan, "base", alike(60))
    evidence(crafter, plan, "fine_tuned", alike(40))
    guards = [control(migrated_url, registry_file)[0] for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def round_(guard: PlanControl) -> None:
        barrier.wait()
        try:
            guard.step_all(now=utcnow() + LATER)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=round_, args=(g,)) for g in guards]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    steps = [e for e in plans.rollouts.history("ansel") if e.kind == STEP_KIND]
    assert [e.details["step"] for e in steps] == [1, 0]
    after = plans.show("ansel")
    assert (after.step, after.status) == (1, PlanStatus.ACTIVE)
    assert after.weights_version == plans.rollouts.get("ansel").version


def test_a_guard_restarted_mid_plan_continues_from_the_stored_step(
    migrated_url: str, registry_file: Path
) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = start(plans)
    evidence(crafter, plan, "base", alike(60))
    evidence(crafter, plan, "fine_tuned", alike(40))
    [at25] = plans.step_all(now=utcnow() + LATER)
    # A new process: nothing but the database carries the plan over.
    fresh, _ = control(migrated_url, registry_file)
    [held] = fresh.step_all(now=utcnow() + LATER)
    assert (held.step, held.percent) == (1, 25.0) and "0 of 20" in held.state
    evidence(crafter, at25, "base", alike(60))
    evidence(crafter, at25, "fine_tuned", alike(40))
    [at50] = fresh.step_all(now=utcnow() + LATER * 2)
    assert at50.percent == 50.0


def test_the_last_step_completes_the_plan(migrated_url: str, registry_file: Path) -> None:
    plans, crafter = control(migrated_url, registry_file)
    plan = plans.create("ansel", "fine_tuned", (50, 100), reason="r", actor="op", min_jobs=20,
                        min_minutes=0, margin=1.0)  # fmt: skip
    evidence(crafter, plan, "base", alike(40))
    evidence(crafter, plan, "fine_tuned", alike(40))
    [done] = plans.step_all(now=utcnow() + LATER)
    assert (done.status, done.percent) == (PlanStatus.COMPLETED, 100.0)
    assert plans.rollouts.get("ansel").weights == {"base": 0.0, "fine_tuned": 1.0}
    assert plans.plans.open("ansel") is None and plans.step_all() == []


def test_the_hook_is_called_with_the_workers_each_queue_needs(
    migrated_url: str, registry_file: Path
) -> None:
    calls: list[tuple[float, dict[str, int]]] = []
    plans, _ = control(
        migrated_url,
        registry_file,
        hook=lambda plan, workers: calls.append((plan.percent, workers)),
    )
    start(plans)
    assert calls and calls[0][0] == 5.0 and set(calls[0][1]) == {"base", "fine_tuned"}


def test_an_operators_change_goes_over_a_guards_note_but_not_over_another_change(
    migrated_url: str, registry_file: Path
) -> None:
    plans, _ = control(migrated_url, registry_file)
    start(plans)
    read = plans.plans.open("ansel")
    assert read is not None
    plans.step_all(now=utcnow() + LATER)  # the guard notes why it holds: a new plan version
    paused = plans._write(read, status=PlanStatus.PAUSED, state="paused by op")
    assert paused.status is PlanStatus.PAUSED and paused.version > read.version + 1
    with pytest.raises(PlanConflict, match="changed meanwhile"):
        plans._write(read, status=PlanStatus.ABORTED, state="aborted by another op")
