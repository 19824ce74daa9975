"""Rollout control on SQLite and PostgreSQL: audited changes, rollback, and the drain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.contracts import BASE_VARIANT, FINE_TUNED_VARIANT, Assignment, ModelUsed, Status
from jobs.errors import InvalidWeights, UnknownAdvisor
from producers import Client
from producers.commands.rollout import rollout_control
from producers.ops.rollout import RolloutControl
from producers.services import Services
from store.lifecycle import StartOutcome
from tests.producers.conftest import (
    FINE_TUNED_ADVISOR,
    beat,
    make_settings,
    photo,
    queued_requests,
)

ACTOR = "alice@laptop"


@pytest.fixture
def services(
    tmp_path: Path, migrated_url: str, registry_file: Path, redis_url: str
) -> Iterator[Services]:
    with Services(make_settings(tmp_path, migrated_url, registry_file, redis_url)) as built:
        yield built


@pytest.fixture
def client(services: Services) -> Client:
    return Client(services=services)


@pytest.fixture
def rollout(services: Services, client: Client) -> RolloutControl:
    return rollout_control(services)


def test_every_weight_change_is_versioned_and_audited(
    services: Services, client: Client, rollout: RolloutControl
) -> None:
    first = rollout.set_weights(
        FINE_TUNED_ADVISOR, {BASE_VARIANT: 9, FINE_TUNED_VARIANT: 1},
        reason="start the canary", actor=ACTOR,
    )  # fmt: skip
    second = rollout.set_weights(
        FINE_TUNED_ADVISOR, {BASE_VARIANT: 0.75, FINE_TUNED_VARIANT: 0.25},
        reason="canary healthy", actor=ACTOR,
    )  # fmt: skip
    assert (first.version, second.version) == (1, 2)
    assert first.weights == {BASE_VARIANT: 0.9, FINE_TUNED_VARIANT: 0.1}
    newest, oldest = services.rollouts.history(FINE_TUNED_ADVISOR)
    assert (oldest.old_weights, oldest.new_weights) == (None, first.weights)
    assert (newest.old_weights, newest.new_weights) == (first.weights, second.weights)
    assert (newest.kind, newest.actor, newest.reason) == ("set", ACTOR, "canary healthy")
    shown = {row.weights.advisor: row for row in rollout.show()}
    assert shown[FINE_TUNED_ADVISOR].weights.version == 2
    assert shown[FINE_TUNED_ADVISOR].variants == [BASE_VARIANT, FINE_TUNED_VARIANT]
    assert shown["weston"].weights.version == 0  # default: no rollout set, all base


@pytest.mark.parametrize(
    ("advisor", "weights", "reason", "error"),
    [
        (FINE_TUNED_ADVISOR, {"nope": 1.0}, "r", InvalidWeights),
        (FINE_TUNED_ADVISOR, {BASE_VARIANT: -0.1, FINE_TUNED_VARIANT: 1.1}, "r", InvalidWeights),
        (FINE_TUNED_ADVISOR, {BASE_VARIANT: 0.0}, "r", InvalidWeights),
        (FINE_TUNED_ADVISOR, {BASE_VARIANT: 1.0}, "  ", InvalidWeights),
        ("weston", {FINE_TUNED_VARIANT: 1.0}, "r", InvalidWeights),
        ("nobody", {BASE_VARIANT: 1.0}, "r", UnknownAdvisor),
    ],
)
def test_invalid_weights_are_refused_and_leave_no_trace(
    services: Services, rollout: RolloutControl, advisor: str, weights: dict[str, float],
    reason: str, error: type[Exception],
) -> None:  # fmt: skip
    with pytest.raises(error):
        rollout.set_weights(advisor, weights, reason=reason, actor=ACTOR)
    assert services.rollouts.history() == []


def test_rollback_zeroes_every_non_base_weight_and_records_it(
    services: Services, client: Client, rollout: RolloutControl
) -> None:
    rollout.set_weights(
        FINE_TUNED_ADVISOR, {BASE_VARIANT: 0.5, FINE_TUNED_VARIANT: 0.5},
        reason="ramp", actor=ACTOR,
    )  # fmt: skip
    result = rollout.rollback(FINE_TUNED_ADVISOR, drain=False, reason="scores dropped", actor=ACTOR)
    assert result.weights.weights == {BASE_VARIANT: 1.0, FINE_TUNED_VARIANT: 0.0}
    assert result.drained == []
    event = services.rollouts.history(FINE_TUNED_ADVISOR)[0]
    assert (event.kind, event.version, event.reason) == ("rollback", 2, "scores dropped")
    assert event.old_weights == {BASE_VARIANT: 0.5, FINE_TUNED_VARIANT: 0.5}
    decision = services.router.decide(FINE_TUNED_ADVISOR, "anyone")
    assert (decision.variant, decision.weights_version) == (BASE_VARIANT, 2)


def test_a_drain_moves_queued_fine_tuned_jobs_to_base_and_leaves_running_ones(
    services: Services, client: Client, rollout: RolloutControl, migrated_url: str, redis_url: str
) -> None:
    beat(migrated_url, FINE_TUNED_VARIANT)
    rollout.set_weights(
        FINE_TUNED_ADVISOR, {BASE_VARIANT: 0.0, FINE_TUNED_VARIANT: 1.0},
        reason="all in", actor=ACTOR,
    )  # fmt: skip
    handles = client.submit_many([{"image": photo(i), "advisor": FINE_TUNED_ADVISOR}
                                  for i in range(4)])  # fmt: skip
    assert {h.variant for h in handles} == {FINE_TUNED_VARIANT}
    running = handles[0].id
    repo = services.repository
    assert repo.start(running, "ft-1", lease_seconds=60, max_attempts=3) is StartOutcome.STARTED

    result = rollout.rollback(FINE_TUNED_ADVISOR, drain=True, reason="bad outputs", actor=ACTOR)

    queued = sorted(h.id for h in handles[1:])
    assert sorted(result.drained) == queued and result.republished == 3
    for job_id in queued:
        job = repo.get(job_id)
        assert (job.status, job.variant, job.reassigned_from) == (
            Status.QUEUED, BASE_VARIANT, FINE_TUNED_VARIANT,
        )  # fmt: skip
        assert job.reassigned_reason is not None and "bad outputs" in job.reassigned_reason
        # Under the rolled-back split (all base) a freshly routed job is no A/B traffic.
        fresh = services.router.decide(FINE_TUNED_ADVISOR, job.subject)
        assert (fresh.variant, fresh.assignment) == (BASE_VARIANT, Assignment.SPLIT)
        assert job.model_used == fresh.model_used.value == ModelUsed.BASE.value
        assert job.assignment == Assignment.SPLIT
    assert repo.get(running).variant == FINE_TUNED_VARIANT
    assert sorted(r["job_id"] for r in queued_requests(redis_url, BASE_VARIANT)) == queued
    assert {r["variant"] for r in queued_requests(redis_url, BASE_VARIANT)} == {BASE_VARIANT}
    # The stale fine-tuned messages stay behind; a worker that checks its variant drops them.
    stale = [r for r in queued_requests(redis_url, FINE_TUNED_VARIANT) if r["job_id"] in queued]
    assert len(stale) == 3
    for request in stale:
        outcome = repo.start(request["job_id"], "ft-1", lease_seconds=60, max_attempts=3,
                             variant=request["variant"])  # fmt: skip
        assert outcome is StartOutcome.REASSIGNED
        assert repo.get(request["job_id"]).status == Status.QUEUED
    event = services.rollouts.history(FINE_TUNED_ADVISOR)[0]
    assert (event.kind, event.actor) == ("rollback", ACTOR)
