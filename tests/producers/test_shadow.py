"""Shadow jobs: the drawn share of split jobs is paired on the other arm, in its shadow queue."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jobs.contracts import Assignment, ErrorKind, Status, queue_for, shadow_queue_for
from jobs.errors import InvalidWeights
from producers import Client, SubmitItem
from producers.commands.rollout import rollout_control
from producers.router import bucket_of, other_arm
from producers.services import Services
from store.models import Job
from tests.producers.conftest import FINE_TUNED_ADVISOR, beat, make_settings, photo


@pytest.fixture
def services(
    tmp_path: Path, sqlite_db: str, registry_file: Path, redis_url: str
) -> Iterator[Services]:
    settings = make_settings(tmp_path, sqlite_db, registry_file, redis_url, weights_cache_seconds=0)
    with Services(settings) as built:
        beat(sqlite_db, "base")
        beat(sqlite_db, "fine_tuned")
        yield built


@pytest.fixture
def client(services: Services) -> Client:
    return Client(services=services)


def waiting(redis_url: str, queue: str) -> set[str]:
    """Job ids of the messages waiting in `queue` (every priority list of it)."""
    server = redis.Redis.from_url(redis_url)
    try:
        keys = [k for k in server.keys(f"{queue}*") if k.decode().split("\x06")[0] == queue]
        raw = [item for key in keys for item in server.lrange(key, 0, -1)]
    finally:
        server.close()
    return {json.loads(base64.b64decode(json.loads(m)["body"]))[1]["job_id"] for m in raw}


def test_the_shadow_share_of_split_jobs_is_paired_on_the_other_arm(
    services: Services, client: Client, redis_url: str
) -> None:
    rollout_control(services).set_weights(
        FINE_TUNED_ADVISOR, {"base": 0.5, "fine_tuned": 0.5}, reason="pair", actor="t", shadow=0.5
    )
    handles = client.submit_many(
        [SubmitItem(photo(i), FINE_TUNED_ADVISOR, subject=f"u{i}") for i in range(40)]
    )
    salt = services.settings.router_salt
    expected = {h.id for h in handles if bucket_of(f"{salt}:shadow", h.id) < 0.5}
    shadows = services.repository.find(Job.shadow_of.is_not(None))

    assert 10 <= len(expected) <= 30 and {s.shadow_of for s in shadows} == expected
    assert all(h.assignment is Assignment.SPLIT for h in handles)  # callers get primaries only
    by_id = {h.id: client.status(h.id) for h in handles}
    for shadow in shadows:
        primary = by_id[shadow.shadow_of or ""]
        assert shadow.assignment == Assignment.SHADOW and shadow.variant != primary.variant
        assert (shadow.image_sha256, shadow.image_ref, shadow.subject) == (
            primary.image_sha256, primary.image_ref, primary.subject
        )  # fmt: skip
        assert shadow.weights_version == primary.weights_version
        assert shadow.model_used in ("base", "fine_tuned") and shadow.published_at is not None
    # Primaries wait in their variant's queue, shadows in the other arm's shadow queue.
    for variant in ("base", "fine_tuned"):
        primaries = {j.id for j in by_id.values() if j.variant == variant}
        assert waiting(redis_url, queue_for(variant)) == primaries
        paired = {s.id for s in shadows if s.variant == variant}
        assert waiting(redis_url, shadow_queue_for(variant)) == paired


def test_forced_jobs_repeated_keys_and_a_zero_share_make_no_shadows(
    services: Services, client: Client
) -> None:
    control = rollout_control(services)
    control.set_weights(FINE_TUNED_ADVISOR, {"base": 0.5, "fine_tuned": 0.5}, reason="r",
                        actor="t", shadow=1.0)  # fmt: skip
    client.submit_many([SubmitItem(photo(i), FINE_TUNED_ADVISOR, variant="base") for i in range(5)])
    first = client.submit(photo(9), FINE_TUNED_ADVISOR, idempotency_key="k")
    again = client.submit(photo(9), FINE_TUNED_ADVISOR, idempotency_key="k")
    assert (again.id, again.created) == (first.id, False)
    assert [s.shadow_of for s in services.repository.find(Job.shadow_of.is_not(None))] == [first.id]
    # Changing only the weights keeps the shadow share; 0 stops pairing.
    assert control.set_weights(FINE_TUNED_ADVISOR, {"base": 0.8, "fine_tuned": 0.2},
                               reason="r", actor="t").shadow == 1.0  # fmt: skip
    control.set_weights(FINE_TUNED_ADVISOR, {"base": 1, "fine_tuned": 0}, reason="r", actor="t",
                        shadow=0)  # fmt: skip
    client.submit_many([SubmitItem(photo(20 + i), FINE_TUNED_ADVISOR) for i in range(5)])
    assert len(services.repository.find(Job.shadow_of.is_not(None))) == 1
    with pytest.raises(InvalidWeights, match="between 0 and 1"):
        control.set_weights(FINE_TUNED_ADVISOR, {"base": 1}, reason="r", actor="t", shadow=1.5)


def test_a_dark_launch_shadows_base_traffic_onto_a_zero_weight_candidate(
    services: Services, client: Client
) -> None:
    assert other_arm({"base": 1.0, "fine_tuned": 0.0}, "base") == "fine_tuned"
    assert other_arm({"base": 0.5, "a": 0.2, "b": 0.3}, "a") == "base"
    assert other_arm({"base": 0.5, "a": 0.25, "b": 0.25}, "base") == "a"
    assert other_arm({"base": 1.0}, "base") is None
    rollout_control(services).set_weights(
        FINE_TUNED_ADVISOR, {"base": 1.0, "fine_tuned": 0.0}, reason="dark", actor="t", shadow=1
    )
    handles = client.submit_many([SubmitItem(photo(i), FINE_TUNED_ADVISOR) for i in range(4)])
    shadows = services.repository.find(Job.shadow_of.is_not(None))
    assert {h.variant for h in handles} == {"base"}
    assert sorted(s.shadow_of or "" for s in shadows) == sorted(h.id for h in handles)
    assert {s.variant for s in shadows} == {"fine_tuned"}


def test_a_rollback_stops_shadows_and_drops_the_queued_ones_instead_of_draining_them(
    services: Services,
    client: Client,
) -> None:
    control = rollout_control(services)
    control.set_weights(FINE_TUNED_ADVISOR, {"base": 0.5, "fine_tuned": 0.5}, reason="r",
                        actor="t", shadow=1.0)  # fmt: skip
    handles = client.submit_many([SubmitItem(photo(i), FINE_TUNED_ADVISOR) for i in range(12)])
    result = control.rollback(FINE_TUNED_ADVISOR, drain=True, reason="bad", actor="t")

    assert result.weights.shadow == 0.0
    shadows = services.repository.find(Job.shadow_of.is_not(None))
    on_candidate = [s for s in shadows if s.variant == "fine_tuned"]
    assert on_candidate and all(
        (s.status, s.error_kind) == (Status.FAILED, ErrorKind.SHADOW_DROPPED) for s in on_candidate
    )
    moved = {h.id for h in handles if h.variant == "fine_tuned"}
    assert set(result.drained) == moved
    assert all(s.status == Status.QUEUED for s in shadows if s.variant == "base")
