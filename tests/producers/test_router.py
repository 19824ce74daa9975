"""The router: weighted, sticky, monotone under a ramp, live across processes, honest fallbacks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.contracts import BASE_VARIANT, FINE_TUNED_VARIANT, Assignment, ModelUsed
from jobs.errors import InvalidWeights, UnknownVariant
from producers.commands.rollout import rollout_control
from producers.router import choose
from producers.services import Services
from tests.producers.conftest import (
    FINE_TUNED_ADVISOR,
    OTHER_ADVISOR,
    beat,
    make_settings,
    run_python,
    settings_env,
)

ACTOR = "test@host"


@pytest.fixture
def built(tmp_path: Path, sqlite_db: str, registry_file: Path) -> Services:
    # A long cache: these tests change weights through the same built, which invalidates it.
    settings = make_settings(tmp_path, sqlite_db, registry_file, weights_cache_seconds=60)
    return Services(settings)


def set_split(built: Services, fine_tuned: float, advisor: str = FINE_TUNED_ADVISOR) -> None:
    weights = {BASE_VARIANT: 1 - fine_tuned, FINE_TUNED_VARIANT: fine_tuned}
    rollout_control(built).set_weights(advisor, weights, reason="test", actor=ACTOR)


def fine_tuned_subjects(built: Services, subjects: list[str]) -> set[str]:
    return {
        s
        for s in subjects
        if built.router.decide(FINE_TUNED_ADVISOR, s).variant == FINE_TUNED_VARIANT
    }


def test_ten_thousand_decisions_at_weight_point_one_land_within_three_sigma(
    built: Services, sqlite_db: str
) -> None:
    beat(sqlite_db, FINE_TUNED_VARIANT)
    set_split(built, 0.1)
    n = 10_000
    hits = len(fine_tuned_subjects(built, [f"user-{i}" for i in range(n)]))
    sigma = math.sqrt(n * 0.1 * 0.9)
    assert abs(hits - n * 0.1) <= 3 * sigma, hits


def test_a_subject_keeps_its_variant_across_calls(built: Services, sqlite_db: str) -> None:
    beat(sqlite_db, FINE_TUNED_VARIANT)
    set_split(built, 0.5)
    subjects = [f"user-{i}" for i in range(200)]
    first = [built.router.decide(FINE_TUNED_ADVISOR, s).variant for s in subjects]
    again = [built.router.decide(FINE_TUNED_ADVISOR, s).variant for s in subjects]
    assert first == again
    assert set(first) == {BASE_VARIANT, FINE_TUNED_VARIANT}


def test_a_subject_keeps_its_variant_across_producer_restarts(
    built: Services, sqlite_db: str
) -> None:
    beat(sqlite_db, FINE_TUNED_VARIANT)
    set_split(built, 0.5)
    subjects = [f"user-{i}" for i in range(200)]
    here = [built.router.decide(FINE_TUNED_ADVISOR, s).variant for s in subjects]
    code = (
        "import json, sys\nfrom producers.services import Services\n"
        f"subjects = {subjects!r}\n"
        f"print(json.dumps([Services().router.decide({FINE_TUNED_ADVISOR!r}, s).variant"
        " for s in subjects]))"
    )
    there = json.loads(run_python(code, settings_env(built.settings)))
    assert there == here
    assert set(here) == {BASE_VARIANT, FINE_TUNED_VARIANT}


def test_raising_the_fine_tuned_weight_keeps_its_earlier_subjects_on_it(
    built: Services, sqlite_db: str
) -> None:
    beat(sqlite_db, FINE_TUNED_VARIANT)
    subjects = [f"user-{i}" for i in range(3000)]
    set_split(built, 0.10)
    at_ten = fine_tuned_subjects(built, subjects)
    set_split(built, 0.25)
    at_twenty_five = fine_tuned_subjects(built, subjects)
    assert at_ten <= at_twenty_five
    assert len(at_twenty_five) > len(at_ten) > 0


def test_zero_weight_variants_are_never_chosen() -> None:
    weights = {"a": 0.0, BASE_VARIANT: 0.5, "z": 0.5, "b": 0.0}
    chosen = {choose(weights, i / 1000) for i in range(1000)} | {choose(weights, 1 - 1e-12)}
    assert chosen == {BASE_VARIANT, "z"}


def test_a_weight_change_reaches_a_second_producer_process_within_the_cache_window(
    tmp_path: Path, sqlite_db: str, registry_file: Path
) -> None:
    cache = 1.0
    settings = make_settings(tmp_path, sqlite_db, registry_file, weights_cache_seconds=cache)
    built = Services(settings)
    set_split(built, 0.1)
    code = (
        "import sys, time\nfrom producers.services import Services\n"
        "router = Services().router\n"
        f"print('ready', router.decide({FINE_TUNED_ADVISOR!r}, 's').weights_version, flush=True)\n"
        "deadline = time.time() + 15\n"
        "while time.time() < deadline:\n"
        f"    if router.decide({FINE_TUNED_ADVISOR!r}, 's').weights_version == 2:\n"
        "        print('seen', time.time(), flush=True)\n"
        "        break\n"
        "    time.sleep(0.02)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], env=settings_env(settings), stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["ready", "1"]
        changed_at = time.time()
        set_split(built, 0.25)
        seen = proc.stdout.readline().split()
    assert seen and seen[0] == "seen", "the second producer never saw version 2"
    assert float(seen[1]) - changed_at <= cache + 0.5


def test_a_fine_tuned_choice_without_a_live_worker_falls_back_to_base_and_says_so(
    tmp_path: Path, sqlite_db: str, registry_file: Path
) -> None:
    settings = make_settings(
        tmp_path, sqlite_db, registry_file, weights_cache_seconds=0,
        heartbeat_interval=0.2, worker_live_window=0.6,
    )  # fmt: skip
    built = Services(settings)
    set_split(built, 1.0)
    first = built.router.decide(FINE_TUNED_ADVISOR, "user-1")
    assert (first.variant, first.assignment) == (BASE_VARIANT, Assignment.FALLBACK)
    assert first.model_used is ModelUsed.BASE
    beat(sqlite_db, FINE_TUNED_VARIANT)
    live = built.router.decide(FINE_TUNED_ADVISOR, "user-1")
    assert (live.variant, live.assignment) == (FINE_TUNED_VARIANT, Assignment.SPLIT)
    time.sleep(0.7)  # the heartbeat ages out of the live window
    stale = built.router.decide(FINE_TUNED_ADVISOR, "user-1")
    assert (stale.variant, stale.assignment) == (BASE_VARIANT, Assignment.FALLBACK)


def test_a_forced_variant_bypasses_the_split_and_is_recorded_as_forced(built: Services) -> None:
    set_split(built, 0.0)
    forced = built.router.decide(FINE_TUNED_ADVISOR, "user-1", FINE_TUNED_VARIANT)
    assert (forced.variant, forced.assignment) == (FINE_TUNED_VARIANT, Assignment.FORCED)
    assert forced.model_used is ModelUsed.FINE_TUNED


def test_forcing_a_variant_that_does_not_serve_the_advisor_names_the_known_ones(
    built: Services,
) -> None:
    with pytest.raises(UnknownVariant, match=r"known: \['base', 'fine_tuned'\]"):
        built.router.decide(FINE_TUNED_ADVISOR, "user-1", "nope")
    with pytest.raises(UnknownVariant, match=r"known: \['base'\]"):
        built.router.decide(OTHER_ADVISOR, "user-1", FINE_TUNED_VARIANT)


def test_an_advisor_without_a_fine_tuned_variant_always_goes_to_base(
    built: Services, sqlite_db: str
) -> None:
    beat(sqlite_db, FINE_TUNED_VARIANT)
    with pytest.raises(InvalidWeights, match="Unknown variant"):
        set_split(built, 0.5, advisor=OTHER_ADVISOR)
    plain = {built.router.decide(OTHER_ADVISOR, f"u{i}") for i in range(100)}
    assert {(d.variant, d.assignment, d.model_used) for d in plain} == {
        (BASE_VARIANT, Assignment.SPLIT, ModelUsed.BASE)
    }
    # Weights written around the validation still cannot send it to a variant not serving it.
    built.rollouts.set(
        OTHER_ADVISOR, {FINE_TUNED_VARIANT: 1.0}, known_variants=built.registry.names,
        actor=ACTOR, reason="bypassing rollout.set_weights",
    )  # fmt: skip
    built.router.invalidate()
    stray = built.router.decide(OTHER_ADVISOR, "u1")
    assert (stray.variant, stray.assignment) == (BASE_VARIANT, Assignment.FALLBACK)


def test_only_a_real_split_is_labelled_as_an_ab_test(built: Services, sqlite_db: str) -> None:
    beat(sqlite_db, FINE_TUNED_VARIANT)
    set_split(built, 0.5)
    labels = {built.router.decide(FINE_TUNED_ADVISOR, f"u{i}").model_used for i in range(100)}
    assert labels == {ModelUsed.AB_TEST_BASE, ModelUsed.AB_TEST_FINE_TUNED}
    set_split(built, 1.0)
    labels = {built.router.decide(FINE_TUNED_ADVISOR, f"u{i}").model_used for i in range(100)}
    assert labels == {ModelUsed.FINE_TUNED}
