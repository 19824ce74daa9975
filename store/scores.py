"""The scores of a stored analysis, kept in their own columns so reports read numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from jobs.analysis import DIMENSIONS


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def stored_scores(llm_outputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """`overall_score` and `dimension_scores` (the seven scores in DIMENSIONS order, None
    where the analysis lacks one) for a job row; both None without an analysis."""
    if not isinstance(llm_outputs, Mapping):
        return {"overall_score": None, "dimension_scores": None}
    by_name: dict[str, int | None] = {}
    for dim in llm_outputs.get("dimensions") or ():
        if isinstance(dim, Mapping) and isinstance(dim.get("name"), str):
            score = _number(dim.get("score"))
            by_name.setdefault(dim["name"], None if score is None else int(score))
    return {
        "overall_score": _number(llm_outputs.get("overall_score")),
        "dimension_scores": [by_name.get(name) for name in DIMENSIONS],
    }
