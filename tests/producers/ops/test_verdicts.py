"""verdicts() over plain rows: the arms it judges, and those a caller asks it to skip."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from jobs.contracts import Assignment, Status
from producers.ops.verdicts import verdict_arms, verdicts


def rows_of(seed: int = 3) -> list[SimpleNamespace]:
    """Split jobs of two advisors, each with base and one or two candidates."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    arms = {"ansel": ("base", "fine_tuned"), "dorothea": ("base", "fine_tuned", "warm")}
    out = []
    for i in range(240):
        advisor = "ansel" if i % 2 else "dorothea"
        variant = rng.choice(arms[advisor])
        failed = rng.random() < 0.05
        out.append(SimpleNamespace(
            id=f"job-{i}", advisor=advisor, variant=variant, assignment=Assignment.SPLIT,
            status=Status.FAILED if failed else Status.SUCCEEDED, error_kind=None,
            completed_at=start + timedelta(minutes=i), shadow_of=None,
            overall=None if failed else rng.gauss(6, 1.5),
            inference_ms=None if failed else rng.randint(30_000, 50_000),
        ))  # fmt: skip
    return out


def test_verdict_arms_names_the_arms_verdicts_judges_in_its_order() -> None:
    rows = rows_of()
    judged = [(v.advisor, v.variant) for v in verdicts(rows, [])]
    assert verdict_arms(rows) == judged
    assert judged == [("ansel", "fine_tuned"), ("dorothea", "fine_tuned"), ("dorothea", "warm")]


def test_skipped_arms_are_left_out_and_the_others_judged_as_before() -> None:
    rows = rows_of()
    every = verdicts(rows, [])
    kept = verdicts(rows, [], skip={("dorothea", "fine_tuned")})
    assert kept == [v for v in every if (v.advisor, v.variant) != ("dorothea", "fine_tuned")]
    assert len(kept) == len(every) - 1
