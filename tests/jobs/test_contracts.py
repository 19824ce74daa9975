"""The wire contract's one rule for the seed's `model_used` labels."""

from __future__ import annotations

import pytest

from jobs.contracts import Assignment, ModelUsed, model_used_for

AB = {"base": 0.9, "fine_tuned": 0.1}
ALL_FINE_TUNED = {"base": 0.0, "fine_tuned": 1.0}
ALL_BASE = {"base": 1.0, "fine_tuned": 0.0}


@pytest.mark.parametrize(
    ("variant", "assignment", "weights", "expected"),
    [
        ("base", Assignment.SPLIT, AB, ModelUsed.AB_TEST_BASE),
        ("fine_tuned", Assignment.SPLIT, AB, ModelUsed.AB_TEST_FINE_TUNED),
        ("canary", Assignment.SPLIT, {"base": 0.5, "canary": 0.5}, ModelUsed.AB_TEST_FINE_TUNED),
        ("fine_tuned", Assignment.SPLIT, ALL_FINE_TUNED, ModelUsed.FINE_TUNED),
        ("base", Assignment.SPLIT, ALL_BASE, ModelUsed.BASE),
        ("base", Assignment.SPLIT, {"base": 1.0}, ModelUsed.BASE),
        ("fine_tuned", Assignment.FORCED, AB, ModelUsed.FINE_TUNED),
        ("base", Assignment.FORCED, AB, ModelUsed.BASE),
        ("base", Assignment.FALLBACK, AB, ModelUsed.BASE),
        ("fine_tuned", Assignment.SPLIT, None, ModelUsed.AB_TEST_FINE_TUNED),
        ("fine_tuned", Assignment.FORCED, None, ModelUsed.FINE_TUNED),
    ],
)
def test_only_a_split_choice_among_several_weighted_variants_is_ab_traffic(
    variant: str, assignment: Assignment, weights: dict[str, float] | None, expected: ModelUsed
) -> None:
    assert model_used_for(variant, assignment, weights) is expected
