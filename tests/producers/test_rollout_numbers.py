"""Rollout weights are finite and in range after the arithmetic, checked on the value stored."""

from __future__ import annotations

import math

import pytest

from jobs.errors import InvalidWeights
from producers.rollouts import RolloutStore, check_split, validate_weights
from store.db import engine_for

KNOWN = {"base", "fine_tuned"}
HUGE = 1e308
TINY = 5e-324  # the smallest subnormal: 1 / TINY overflows


@pytest.fixture
def store(migrated_url: str) -> RolloutStore:
    return RolloutStore(engine_for(migrated_url))


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({"base": HUGE, "fine_tuned": HUGE}, {"base": 0.5, "fine_tuned": 0.5}),
        ({"base": 1.7e308, "fine_tuned": 1.7e308}, {"base": 0.5, "fine_tuned": 0.5}),
        ({"base": HUGE, "fine_tuned": 0.0}, {"base": 1.0, "fine_tuned": 0.0}),
        ({"base": TINY, "fine_tuned": TINY}, {"base": 0.5, "fine_tuned": 0.5}),
        ({"base": TINY, "fine_tuned": 0.0}, {"base": 1.0, "fine_tuned": 0.0}),
        ({"base": 1.5e308, "fine_tuned": 0.5e308}, {"base": 0.75, "fine_tuned": 0.25}),
    ],
    ids=["1e308 each", "1.7e308 each", "1e308 alone", "subnormal each", "subnormal alone",
         "3:1 near the top"],
)  # fmt: skip
def test_extreme_weights_are_stored_normalised_to_a_split_that_sums_to_one(
    store: RolloutStore, weights: dict[str, float], expected: dict[str, float]
) -> None:
    store.set("ansel", weights, known_variants=KNOWN, actor="op", reason="extremes")
    stored = store.get("ansel").weights
    assert stored == pytest.approx(expected)
    assert all(math.isfinite(v) for v in stored.values())
    assert math.fsum(stored.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "weights",
    [
        {"base": math.inf, "fine_tuned": 1.0},
        {"base": math.nan, "fine_tuned": 1.0},
        {"base": -1e-300, "fine_tuned": 1.0},
        {"base": 0.0, "fine_tuned": 0.0},
        {"base": -0.0},
        {},
    ],
    ids=["inf", "nan", "negative", "all zero", "negative zero", "empty"],
)
def test_weights_that_cannot_form_a_split_are_refused_and_nothing_is_stored(
    store: RolloutStore, weights: dict[str, float]
) -> None:
    with pytest.raises(InvalidWeights):
        store.set("ansel", weights, known_variants=KNOWN, actor="op", reason="bad")
    assert store.get("ansel").version == 0


@pytest.mark.parametrize(
    "split",
    [{"base": 0.0, "fine_tuned": 0.0}, {"base": math.inf}, {"base": 0.6, "fine_tuned": 0.6},
     {"base": math.nan}, {"base": 1.5, "fine_tuned": -0.5}],
    ids=["zeros", "inf", "sum 1.2", "nan", "negative part"],
)  # fmt: skip
def test_the_split_check_refuses_a_value_that_breaks_the_stored_invariant(
    split: dict[str, float],
) -> None:
    with pytest.raises(InvalidWeights, match="do not form a split"):
        check_split(split)


def test_normalising_never_returns_a_split_that_fails_its_own_check() -> None:
    for exponent in range(-323, 309, 7):
        for ratio in (1.0, 0.5, 1e-10, 1e10):
            base = 10.0**exponent
            weights = {"base": base, "fine_tuned": min(base * ratio, 1.7e308)}
            check_split(validate_weights(weights, KNOWN))
