"""Operators and guard processes around a rollout plan on real tiny-model workers.

One stack for the module (PostgreSQL, the embedded broker, a base and a fine_tuned worker):
pause, resume and abort while jobs run; a real `advisor guard` loop killed mid-plan and
another started; two guard loops over the same plan at once. Each test starts the candidate
from weight 0, so its exposure (the sequence the gate judges) begins with the test's plan.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from advisor_worker.devtools.adapter_maker import write_random_adapter
from producers import Client, Services, SubmitItem
from producers.ops.guard import enforce
from producers.ops.plan_gate import check_gate
from producers.ops.plan_rounds import STEP_KIND
from producers.ops.plans import ABORT_KIND, PlanControl
from producers.plans import Plan, PlanStatus, PlanStore
from store.models import RolloutEvent
from tests.advisor_worker.test_plan_e2e import PER_ARM, ROUND_BATCH, subjects_for
from tests.advisor_worker.test_worker_e2e import photo, settings_of, setup_env
from tests.conftest import postgres_database
from tests.support import (
    Stack,
    Started,
    eventually,
    start_command,
    wait_until_final,
)

MIN_MINUTES = 0.05  # 3 s a step
GUARD_INTERVAL = "0.5"
ROUNDS = 8  # job rounds a plan may take before a test gives up


@dataclass(kw_only=True)
class PlanStack(Stack):
    """The module's live plan world: the stack's workers, services, a producer, plan control;
    guard logs in its root."""

    services: Services
    producer: Client  # the producers' client (Stack.client() is an HTTP one)
    plans: PlanControl
    subjects: itertools.count[int] = field(default_factory=itertools.count)
    # photo() draws seeds below 300; a photo seen again is a new job all the same.
    seeds: Iterator[int] = field(default_factory=lambda: itertools.cycle(range(10, 290)))

    def fresh_plan(self) -> Plan:
        """The candidate at 0 (its exposure ends), then a plan starting it at 5%."""
        if self.plans.plans.open("ansel") is not None:  # left open by a failed test
            self.plans.abort("ansel", reason="a test starts afresh", actor="test")
        rollouts = self.services.rollouts
        current = rollouts.get("ansel")
        rollouts.set("ansel", {"base": 1.0, "fine_tuned": 0.0}, actor="test",
                     reason="a test starts from base", known_variants={"base", "fine_tuned"},
                     expected_version=current.version)  # fmt: skip
        return self.plans.create("ansel", "fine_tuned", (5, 25, 50, 100), reason="e2e",
                                 actor="test", min_jobs=PER_ARM, min_minutes=MIN_MINUTES,
                                 margin=1.5)  # fmt: skip

    def round(self) -> list[str]:
        """PER_ARM jobs to each weighted arm, run to the end on the workers; their variants."""
        self.services.router.invalidate()  # a guard process may have moved the weights
        weights = self.services.rollouts.get("ansel").weights
        salt = self.services.settings.router_salt
        items = [SubmitItem(photo(next(self.seeds)), "ansel", subject=s)
                 for s in subjects_for(salt, weights, self.subjects)]  # fmt: skip
        ids = [h.id for h in self.producer.submit_many(items)]
        wait_until_final(self.repo, ids, timeout=240)
        return [self.repo.get(job_id).variant for job_id in ids]

    def guard(self, name: str) -> Started:
        """A real `advisor guard` loop, as an operator or a service manager starts it."""
        return start_command("producers.cli", ["guard", "--interval", GUARD_INTERVAL],
                             self.env.full(), self.root / f"guard-{name}.log")  # fmt: skip

    def log_of(self, name: str) -> str:
        return (self.root / f"guard-{name}.log").read_text(errors="replace")

    def plan(self) -> Plan:
        return self.plans.show("ansel")

    def events(self, plan: Plan, kind: str) -> list[RolloutEvent]:
        """`plan`'s rollout events of `kind`, oldest first."""
        history = self.services.rollouts.history("ansel", limit=500)
        return [e for e in reversed(history)
                if e.kind == kind and (e.details or {}).get("plan") == plan.id]  # fmt: skip

    def steps_taken(self, plan: Plan) -> list[tuple[int, float]]:
        """(step it left, percent it went to) of each step the guard took, oldest first."""
        taken = [e.details or {} for e in self.events(plan, STEP_KIND)]
        return [(d["statistics"]["step"], d["percent"]) for d in taken if d.get("statistics")]


def stop(proc: Started, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, pg_database: str
) -> Iterator[PlanStack]:
    root = tmp_path_factory.mktemp("plan-control")
    env = setup_env(root, tiny_model_dir, pg_database, f"sqla+sqlite:///{root / 'broker.db'}")
    env.values.update(ROUND_BATCH)
    # A light fine-tune that scores like base (as in test_plan_e2e.py).
    write_random_adapter(tiny_model_dir, root / "adapters" / "ansel-v1", fmt="peft",
                         alpha=0.05)  # fmt: skip
    services = Services(settings_of(env))
    with services, Client(services=services) as client:
        plans = PlanControl(services.engine, services.registry, services.rollouts,
                            PlanStore(services.engine),
                            on_weights=services.router.invalidate)  # fmt: skip
        stack = PlanStack(root=root, env=env, settings=services.settings, services=services,
                          producer=client, plans=plans)  # fmt: skip
        try:
            stack.start_processes(["base", "fine_tuned"])
            yield stack
        finally:
            stack.stop()


def guard_round(stack: PlanStack) -> None:
    s = stack.services
    enforce(s.engine, s.rollouts, s.registry, plans=stack.plans)


@pytest.mark.slow
def test_a_paused_plan_holds_on_good_evidence_resume_continues_and_abort_returns_to_base(
    stack: PlanStack,
) -> None:
    plan = stack.fresh_plan()
    stack.round()
    stack.round()  # MIN_PER_ARM scored jobs per arm: enough for the gate at 5%
    paused = stack.plans.pause("ansel", reason="looking at the critiques", actor="op")
    time.sleep(MIN_MINUTES * 60)

    guard_round(stack)
    guard_round(stack)

    held = stack.plan()
    assert held.status is PlanStatus.PAUSED and held.step == 0, held.state
    assert held.version == paused.version  # the guard never wrote over a paused plan
    assert check_gate(stack.services.engine, held).passed  # the evidence alone would step it
    assert stack.services.rollouts.get("ansel").weights["fine_tuned"] == pytest.approx(0.05)

    resumed = stack.plans.resume("ansel", reason="looks fine", actor="op")
    assert (resumed.status, resumed.step) == (PlanStatus.ACTIVE, 0)
    assert resumed.step_started_at > paused.step_started_at
    guard_round(stack)
    # The step counts again from the resume: the jobs before it are the exposure's, not its.
    assert stack.plan().step == 0 and f"0 of {PER_ARM} finished" in stack.plan().state
    stack.round()
    time.sleep(MIN_MINUTES * 60)
    guard_round(stack)
    assert stack.plan().percent == 25, stack.plan().state
    assert stack.steps_taken(plan) == [(0, 25.0)]

    aborted = stack.plans.abort("ansel", reason="enough for today", actor="op")

    assert aborted.status is PlanStatus.ABORTED and "aborted by op at 25%" in aborted.state
    assert stack.services.rollouts.get("ansel").weights == {"base": 1.0, "fine_tuned": 0.0}
    [event] = stack.events(plan, ABORT_KIND)
    assert event.actor == "op" and event.reason == "plan aborted: enough for today"
    assert event.details == {"plan": plan.id, "step": 1}
    guard_round(stack)
    assert stack.plan().status is PlanStatus.ABORTED and stack.steps_taken(plan) == [(0, 25.0)]
    assert set(stack.round()) == {"base"}  # every new job goes to base


@pytest.mark.slow
def test_a_guard_killed_mid_plan_is_followed_by_another_that_continues_from_the_stored_step(
    stack: PlanStack,
) -> None:
    plan = stack.fresh_plan()
    stack.round()
    stack.round()
    first = stack.guard("first")
    try:
        eventually("the first guard steps to 25%", lambda: stack.plan().percent == 25, 90)
        # It judged the new step at least once (a hold written over the step's row)...
        eventually("a round at 25%", lambda: stack.plan().state.startswith("holding at 25%"), 90)
    finally:
        stop(first)  # ... and dies with no chance to clean up
    assert first.returncode == -signal.SIGKILL
    at_kill = stack.plan()

    second = stack.guard("second")
    try:
        # The first is dead and the test writes nothing: any write is the second's round.
        eventually(
            "the second guard's first round", lambda: stack.plan().version > at_kill.version, 90
        )
        # Without new evidence it holds where the first left the plan: no step repeated.
        assert stack.plan().percent == 25 and stack.steps_taken(plan) == [(0, 25.0)]
        stack.round()
        eventually("the second guard steps to 50%", lambda: stack.plan().percent == 50, 90)
        eventually("a round at 50%", lambda: stack.plan().state.startswith("holding at 50%"), 90)
    finally:
        stop(second, signal.SIGTERM)

    assert stack.steps_taken(plan) == [(0, 25.0), (1, 50.0)]
    assert "plan ansel/fine_tuned active: holding at 25%" in stack.log_of("second")
    stack.plans.abort("ansel", reason="test done", actor="test")


@pytest.mark.slow
def test_two_guard_loops_at_once_take_each_step_of_a_plan_exactly_once(stack: PlanStack) -> None:
    plan = stack.fresh_plan()
    guards = [stack.guard("a"), stack.guard("b")]
    try:
        for _ in range(ROUNDS):
            stack.round()
            after = stack.plan()
            # Either guard steps, or both have judged the round's jobs and hold (each round
            # of each guard writes its hold over the plan's row).
            eventually("a step or holds after the round", lambda a=after: (  # type: ignore[misc]
                stack.plan().step > a.step or not stack.plan().is_open
                or stack.plan().version > a.version + 4), 90)  # fmt: skip
            if not stack.plan().is_open:
                break
        final = stack.plan()
        time.sleep(2)  # rounds of both guards after the end
    finally:
        for guard in guards:
            stop(guard, signal.SIGTERM)

    assert final.status is PlanStatus.COMPLETED, final.state
    assert stack.steps_taken(plan) == [(0, 25.0), (1, 50.0), (2, 100.0)]
    versions = [e.version for e in stack.events(plan, STEP_KIND)]
    assert versions == sorted(set(versions)) and len(versions) == 4  # the start and 3 steps
    assert stack.services.rollouts.get("ansel").weights == {"base": 0.0, "fine_tuned": 1.0}
    for name in ("a", "b"):  # both loops were running rounds over the plan
        assert stack.log_of(name).count("plan ansel/fine_tuned active") >= 3, stack.log_of(name)
