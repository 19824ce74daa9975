"""Guardrails: a crafted breach rolls the variant back, reason recorded; too little data holds."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery
from sqlalchemy import update

from jobs.clock import utcnow
from jobs.contracts import GUARD_TASK, Assignment, ErrorKind, Status
from jobs.variants import Registry, load_registry
from producers.ops.exposure import RolloutState
from producers.ops.guard import (
    Action,
    GuardDecision,
    GuardThresholds,
    beat_schedule,
    decide,
    enforce,
    evaluate,
    register_guard_task,
    run_loop,
)
from producers.ops.guardrails import INPUT_ERRORS, judged
from producers.rollouts import RolloutStore, Weights
from store.db import engine_for
from store.models import Job, RolloutEvent
from tests.producers.conftest import make_settings
from tests.producers.crafted_jobs import Crafter

KNOWN = {"base", "fine_tuned"}


def registry(registry_file: Path) -> Registry:
    return load_registry(registry_file, "test-model")


def canary(url: str, ft_weight: float = 0.1) -> tuple[Crafter, RolloutStore]:
    engine = engine_for(url)
    store = RolloutStore(engine)
    weights = {"base": 1 - ft_weight, "fine_tuned": ft_weight}
    store.set("ansel", weights, known_variants={"base", "fine_tuned"}, actor="op", reason="canary")
    return Crafter(engine), store


def outcomes(
    crafter: Crafter, variant: str, ok: int, failures: dict[ErrorKind, int], ms: int = 40_000
) -> None:
    kinds = [kind for kind, n in failures.items() for _ in range(n)]
    ids = crafter.queue(ok + len(kinds), variant=variant)
    for job_id in ids[:ok]:
        crafter.succeed(job_id, inference_ms=ms)
    for job_id, kind in zip(ids[ok:], kinds, strict=True):
        crafter.fail(job_id, kind)


def test_a_failure_rate_breach_rolls_the_variant_back_and_records_why(
    migrated_url: str, registry_file: Path
) -> None:
    crafter, store = canary(migrated_url)
    outcomes(crafter, "base", 30, {})
    outcomes(crafter, "fine_tuned", 22, {ErrorKind.TIMEOUT: 5, ErrorKind.INTERNAL: 3})

    [decision] = enforce(crafter.engine, store, registry(registry_file))

    assert (decision.action, decision.applied) == (Action.ROLLBACK, True)
    assert store.get("ansel").weights == {"base": 1.0, "fine_tuned": 0.0}
    event = store.history("ansel", limit=1)[0]
    assert (event.kind, event.actor) == ("guard", "guard")
    assert "failure rate vs base 0.267 vs base 0.000: p " in event.reason
    assert event.old_weights == {"base": 0.9, "fine_tuned": 0.1}
    # The event carries the statistics the decision was taken on.
    checks = {c["rule"]: c for c in event.details["checks"]}
    compared = checks["failure rate vs base"]
    assert compared["method"] == "sequential (odds-ratio mixture SPRT)"
    assert compared["breached"] and compared["p"] <= 0.05 and compared["n"] == 8
    # 8 of 30 against the 10% cap is not yet conclusive on its own.
    assert not checks["failure rate cap"]["breached"]
    assert checks["inference time vs base"]["method"] == "sequential (mSPRT, Welch variance)"
    assert event.details["variant_stats"]["failed"] == 8

    # Already at 0: a second round holds; the change of decision is noted once.
    [again] = enforce(crafter.engine, store, registry(registry_file))
    assert (again.action, again.applied) == (Action.HOLD, False)
    enforce(crafter.engine, store, registry(registry_file))
    assert [e.kind for e in store.history("ansel")] == ["guard-check", "guard", "set"]


def test_two_failures_of_two_are_not_yet_evidence_but_five_of_five_are(
    migrated_url: str, registry_file: Path
) -> None:
    crafter, store = canary(migrated_url)
    outcomes(crafter, "fine_tuned", 0, {ErrorKind.TIMEOUT: 2})

    [decision] = enforce(crafter.engine, store, registry(registry_file))

    assert decision.action is Action.OK and not decision.breaches, decision.reason
    assert store.get("ansel").weights == {"base": 0.9, "fine_tuned": 0.1}
    assert [e.kind for e in store.history("ansel")] == ["guard-check", "set"]

    outcomes(crafter, "fine_tuned", 0, {ErrorKind.TIMEOUT: 3})
    [decision] = enforce(crafter.engine, store, registry(registry_file))
    assert decision.action is Action.ROLLBACK and decision.applied
    assert decision.breaches[0].startswith("failure rate cap 1.000 (limit 0.1)")


def test_forced_and_shadow_jobs_are_not_judged(migrated_url: str, registry_file: Path) -> None:
    crafter, store = canary(migrated_url)
    outcomes(crafter, "base", 20, {})
    for assignment in (Assignment.FORCED, Assignment.SHADOW):
        for job_id in crafter.queue(10, variant="fine_tuned", assignment=assignment):
            crafter.fail(job_id, ErrorKind.TIMEOUT)

    [decision] = enforce(crafter.engine, store, registry(registry_file))

    assert decision.action is Action.HOLD and decision.variant_stats.completed == 0


def test_invalid_output_and_slow_inference_are_breaches_of_their_own(sqlite_db: str) -> None:
    crafter, store = canary(sqlite_db)
    outcomes(crafter, "base", 30, {}, ms=40_000)
    outcomes(crafter, "fine_tuned", 22, {ErrorKind.INVALID_OUTPUT: 8}, ms=100_000)

    [decision] = evaluate(crafter.engine, store, "ansel")

    assert decision.action is Action.ROLLBACK
    breached = {c.rule: c for c in decision.checks if c.breached}
    assert {"invalid-output rate cap", "inference time vs base"} <= set(breached)
    assert breached["inference time vs base"].variant_value == pytest.approx(2.5)
    assert decision.variant_stats.invalid_output == 8


def test_a_slightly_slower_candidate_within_the_ratio_is_not_a_breach(sqlite_db: str) -> None:
    crafter, store = canary(sqlite_db)
    for variant, centre in (("base", 40_000), ("fine_tuned", 48_000)):
        ids = crafter.queue(40, variant=variant)
        for i, job_id in enumerate(ids):
            crafter.succeed(job_id, inference_ms=centre + 500 * (i % 7))

    [decision] = evaluate(crafter.engine, store, "ansel")

    [latency] = [c for c in decision.checks if c.rule == "inference time vs base"]
    assert latency.variant_value == pytest.approx(1.2, abs=0.02) and not latency.breached
    assert decision.action is Action.OK


@pytest.mark.parametrize("kind", sorted(INPUT_ERRORS))
def test_bad_input_does_not_count_against_a_variant(sqlite_db: str, kind: ErrorKind) -> None:
    crafter, store = canary(sqlite_db)
    outcomes(crafter, "base", 25, {})
    outcomes(crafter, "fine_tuned", 25, {kind: 10})

    [decision] = evaluate(crafter.engine, store, "ansel")

    assert decision.action is Action.OK, decision.reason
    assert decision.variant_stats.completed == 25


def test_cancelled_jobs_never_count_as_failures_of_a_variant(sqlite_db: str) -> None:
    crafter, store = canary(sqlite_db)
    outcomes(crafter, "base", 25, {})
    outcomes(crafter, "fine_tuned", 25, {})
    for job_id in crafter.queue(20, variant="fine_tuned"):
        crafter.cancel(job_id, started=int(job_id[-1], 16) % 2 == 0)

    [decision] = evaluate(crafter.engine, store, "ansel")

    assert decision.action is Action.OK, decision.reason
    assert (decision.variant_stats.completed, decision.variant_stats.failed) == (25, 0)


def test_the_guard_task_registers_on_celery_and_rolls_back_when_called(
    sqlite_db: str, tmp_path: Path, registry_file: Path
) -> None:
    crafter, store = canary(sqlite_db)
    outcomes(crafter, "fine_tuned", 20, {ErrorKind.INTERNAL: 10})
    app = Celery("guard-test", set_as_current=False)

    register_guard_task(app, make_settings(tmp_path, sqlite_db, registry_file))
    [summary] = app.tasks[GUARD_TASK]()

    assert summary["action"] == "rollback" and summary["applied"] is True
    assert store.get("ansel").weights["fine_tuned"] == 0.0
    assert beat_schedule(120, queue="advisor.ops") == {
        "advisor-guard": {
            "task": GUARD_TASK,
            "schedule": 120,
            "options": {"expires": 120, "queue": "advisor.ops"},
        }
    }


def test_the_loop_evaluates_every_interval_until_stopped(
    sqlite_db: str, registry_file: Path
) -> None:
    crafter, store = canary(sqlite_db)
    stop = threading.Event()
    seen: list[list[GuardDecision]] = []

    def on_round(decisions: list[GuardDecision]) -> None:
        seen.append(decisions)
        if len(seen) == 3:
            stop.set()

    rounds = run_loop(
        crafter.engine, store, registry(registry_file), interval=0.01, stop=stop,
        on_round=on_round,
        thresholds=GuardThresholds(window_hours=1),
    )  # fmt: skip

    assert rounds == 3
    assert [[d.action for d in r] for r in seen] == [[Action.HOLD]] * 3


def test_an_operator_change_between_the_guards_read_and_write_is_not_overwritten(
    migrated_url: str, registry_file: Path
) -> None:
    crafter, store = canary(migrated_url)
    outcomes(crafter, "base", 30, {})
    outcomes(crafter, "fine_tuned", 22, {ErrorKind.TIMEOUT: 8})
    read = store.get

    def read_then_operator_writes(advisor: str) -> Weights:
        seen = read(advisor)
        if store.history(advisor, limit=10)[0].actor != "alice":
            store.set(advisor, {"base": 0.5, "fine_tuned": 0.5}, known_variants=KNOWN,
                      actor="alice", reason="widen the canary")  # fmt: skip
        return seen

    store.get = read_then_operator_writes  # type: ignore[method-assign]
    [decision] = enforce(crafter.engine, store, registry(registry_file), advisors=["ansel"])

    assert (decision.action, decision.applied) == (Action.HOLD, False)
    assert "changed meanwhile (now v2)" in decision.reason
    assert read("ansel").weights == {"base": 0.5, "fine_tuned": 0.5}


def backdate_events(store: RolloutStore, to: datetime) -> None:
    """Every recorded rollout event of the test happened at `to`."""
    with store.engine.begin() as conn:
        conn.execute(update(RolloutEvent).values(created_at=to))


def test_failures_older_than_any_window_still_count_in_the_candidates_one_sequence(
    sqlite_db: str,
) -> None:
    crafter, store = canary(sqlite_db)
    now = utcnow()
    backdate_events(store, now - timedelta(days=3))
    outcomes(crafter, "base", 30, {})
    outcomes(crafter, "fine_tuned", 22, {ErrorKind.TIMEOUT: 8})
    # Every job finished two days ago: a 6-hour window would see none of them.
    with crafter.engine.begin() as conn:
        conn.execute(update(Job).values(completed_at=now - timedelta(days=2)))

    [decision] = evaluate(crafter.engine, store, "ansel", now=now)

    assert decision.action is Action.ROLLBACK, decision.reason
    assert decision.sequence_start == now - timedelta(days=3)
    assert not decision.is_fallback_window and "one sequence since" in decision.reason


def test_a_step_that_only_moves_the_weight_keeps_the_sequence_but_a_reexposure_starts_anew(
    sqlite_db: str,
) -> None:
    crafter, store = canary(sqlite_db)
    outcomes(crafter, "base", 30, {})
    outcomes(crafter, "fine_tuned", 22, {ErrorKind.TIMEOUT: 8})
    first = evaluate(crafter.engine, store, "ansel")[0].sequence_start

    store.set("ansel", {"base": 0.5, "fine_tuned": 0.5}, known_variants=KNOWN, actor="op",
              reason="next step")  # fmt: skip
    [moved] = evaluate(crafter.engine, store, "ansel")
    assert moved.sequence_start == first and moved.action is Action.ROLLBACK

    store.set("ansel", {"base": 1.0, "fine_tuned": 0.0}, known_variants=KNOWN, actor="op",
              reason="off")  # fmt: skip
    store.set("ansel", {"base": 0.9, "fine_tuned": 0.1}, known_variants=KNOWN, actor="op",
              reason="fixed adapter, again")  # fmt: skip
    [fresh] = evaluate(crafter.engine, store, "ansel")
    assert fresh.sequence_start is not None and first is not None
    assert fresh.sequence_start > first
    assert fresh.action is Action.HOLD and fresh.variant_stats.completed == 0, fresh.reason


def test_a_variant_without_rollout_history_falls_back_to_the_window(sqlite_db: str) -> None:
    crafter = Crafter(engine_for(sqlite_db))
    store = RolloutStore(crafter.engine)
    outcomes(crafter, "fine_tuned", 20, {})

    [decision] = evaluate(crafter.engine, store, "ansel", thresholds=GuardThresholds(2))

    assert decision.is_fallback_window and "last 2h: no recorded exposure" in decision.reason
    assert decision.action is Action.OK and decision.variant_stats.completed == 20


def test_a_non_finite_measurement_holds_with_a_named_reason_instead_of_a_p_value() -> None:
    now = utcnow()
    rows = [
        SimpleNamespace(variant=variant, status=Status.SUCCEEDED, error_kind=None,
                        assignment=Assignment.SPLIT, completed_at=now - timedelta(minutes=i),
                        inference_ms=math.inf if i == 3 else 40_000 + i)
        for i, variant in enumerate(["base", "fine_tuned"] * 25)
    ]  # fmt: skip
    state = RolloutState({"base": 0.9, "fine_tuned": 0.1}, 1, {"fine_tuned": now - timedelta(1)})

    [decision] = decide("ansel", judged(rows), state, GuardThresholds(), now)

    assert decision.action is Action.HOLD and not decision.checks
    assert decision.reason.startswith("cannot judge fine_tuned of ansel: observations must be")
