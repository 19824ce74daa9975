"""Guardrails: a crafted breach rolls the variant back, reason recorded; too little data holds."""

from __future__ import annotations

import threading
from pathlib import Path

from celery import Celery

from jobs.contracts import GUARD_TASK, ErrorKind
from jobs.db import engine_for
from jobs.rollouts import RolloutStore, Weights
from jobs.variants import Registry, load_registry
from producers.ops.guard import (
    Action,
    GuardDecision,
    GuardThresholds,
    beat_schedule,
    enforce,
    evaluate,
    register_guard_task,
    run_loop,
)
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
    assert "failure rate 0.27 (8/30) > 0.10" in event.reason
    assert event.old_weights == {"base": 0.9, "fine_tuned": 0.1}

    # Already at 0: a second round holds and writes nothing.
    [again] = enforce(crafter.engine, store, registry(registry_file))
    assert (again.action, again.applied) == (Action.HOLD, False)
    assert len(store.history("ansel")) == 2


def test_too_few_samples_hold_even_when_every_job_failed(
    migrated_url: str, registry_file: Path
) -> None:
    crafter, store = canary(migrated_url)
    outcomes(crafter, "fine_tuned", 0, {ErrorKind.TIMEOUT: 5})

    [decision] = enforce(crafter.engine, store, registry(registry_file))

    assert decision.action is Action.HOLD and "inconclusive" in decision.reason
    assert store.get("ansel").weights == {"base": 0.9, "fine_tuned": 0.1}
    assert [e.kind for e in store.history("ansel")] == ["set"]


def test_invalid_output_and_slow_p95_are_breaches_of_their_own(sqlite_db: str) -> None:
    crafter, store = canary(sqlite_db)
    outcomes(crafter, "base", 30, {}, ms=40_000)
    outcomes(crafter, "fine_tuned", 28, {ErrorKind.INVALID_OUTPUT: 2}, ms=100_000)

    [decision] = evaluate(crafter.engine, store, "ansel")

    assert decision.action is Action.ROLLBACK
    assert decision.variant_stats.failed == 2  # 2/30 is under the 10% failure limit
    assert [b.split(" ")[0] for b in decision.breaches] == ["invalid-output", "p95"]
    assert "2.50x base" in decision.breaches[1]


def test_bad_input_does_not_count_against_a_variant(sqlite_db: str) -> None:
    crafter, store = canary(sqlite_db)
    outcomes(crafter, "base", 25, {})
    outcomes(crafter, "fine_tuned", 25, {ErrorKind.INVALID_IMAGE: 10})

    [decision] = evaluate(crafter.engine, store, "ansel")

    assert decision.action is Action.OK, decision.reason
    assert decision.variant_stats.completed == 25


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
        thresholds=GuardThresholds(min_samples=5),
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
