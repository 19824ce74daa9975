"""Rollout writes are compare-and-set on the version: two writers never overwrite each other."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobs.errors import StaleVersion
from producers.rollouts import RolloutStore, Weights
from store.db import engine_for

KNOWN = {"base", "fine_tuned"}


@pytest.fixture
def store(migrated_url: str) -> RolloutStore:
    return RolloutStore(engine_for(migrated_url))


def write(store: RolloutStore, ft: float, expected: int | None, actor: str) -> Weights:
    return store.set(
        "ansel", {"base": 1 - ft, "fine_tuned": ft}, known_variants=KNOWN, actor=actor,
        reason=f"{actor} sets {ft}", expected_version=expected,
    )  # fmt: skip


def test_a_write_over_a_stale_version_is_refused_with_the_current_one(
    store: RolloutStore,
) -> None:
    write(store, 0.1, 0, "op")
    write(store, 0.2, 1, "op")
    with pytest.raises(StaleVersion, match="at version 2, not 1") as info:
        write(store, 0.5, 1, "late")
    assert (info.value.expected, info.value.current) == (1, 2)
    assert store.get("ansel").weights == {"base": 0.8, "fine_tuned": 0.2}
    assert [e.actor for e in store.history("ansel")] == ["op", "op"]


@pytest.mark.parametrize("first_write", [True, False], ids=["first write", "update"])
def test_two_concurrent_writers_over_one_version_one_wins_the_other_is_told(
    store: RolloutStore, first_write: bool
) -> None:
    if not first_write:
        write(store, 0.1, 0, "op")
    version = store.get("ansel").version
    barrier = threading.Barrier(2)

    def writer(name: str, ft: float) -> str:
        barrier.wait()
        try:
            write(store, ft, version, name)
        except StaleVersion as exc:
            assert exc.current == version + 1
            return "stale"
        return "won"

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(writer, ["guard", "alice"], [0.0, 0.3]))
    assert sorted(outcomes) == ["stale", "won"]
    current = store.get("ansel")
    winner = ["guard", "alice"][outcomes.index("won")]
    assert (current.version, current.updated_by) == (version + 1, winner)
    assert len(store.history("ansel")) == version + 1
