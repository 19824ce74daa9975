"""The report's data checks: sample-ratio mismatch per weights version and stage, score copy."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.contracts import Assignment
from producers.ops.report import build_report
from producers.ops.srm import srm_check
from producers.ops.stats import score_copy
from store.db import engine_for
from tests.producers.crafted_jobs import Crafter, set_weights


def test_srm_flags_a_60_40_outcome_of_a_50_50_split_and_passes_a_fair_draw() -> None:
    skewed = srm_check(
        "ansel", 1, "routed", {"base": 600, "fine_tuned": 400}, {"base": 0.5, "fine_tuned": 0.5}
    )
    assert skewed.is_mismatch and skewed.p is not None and skewed.p < 1e-9
    draw = int(np.random.default_rng(7).binomial(1000, 0.5))
    fair = srm_check(
        "ansel",
        1,
        "routed",
        {"base": draw, "fine_tuned": 1000 - draw},
        {"base": 0.5, "fine_tuned": 0.5},
    )
    assert not fair.is_mismatch and fair.p is not None and fair.p > 0.001
    stray = srm_check(
        "ansel", 1, "routed", {"base": 10, "fine_tuned": 1}, {"base": 1.0, "fine_tuned": 0.0}
    )
    assert stray.is_mismatch


def test_srm_uses_each_versions_own_weights_from_the_audit_trail(migrated_url: str) -> None:
    engine = engine_for(migrated_url)
    crafter = Crafter(engine)
    v1 = set_weights(migrated_url, "ansel", {"base": 0.5, "fine_tuned": 0.5})
    v2 = set_weights(migrated_url, "ansel", {"base": 0.8, "fine_tuned": 0.2})
    set_weights(migrated_url, "ansel", {"base": 0.5, "fine_tuned": 0.5})  # current: v3
    crafter.queue(300, variant="base", weights_version=v1)
    crafter.queue(200, variant="fine_tuned", weights_version=v1)
    crafter.queue(400, variant="base", weights_version=v2)
    crafter.queue(100, variant="fine_tuned", weights_version=v2)
    # Forced jobs are not part of the split and must not disturb the check.
    crafter.queue(50, variant="fine_tuned", weights_version=v2, assignment=Assignment.FORCED)

    checks = {
        (c.weights_version, c.stage): c for c in build_report(engine, days=1, advisor="ansel").srm
    }

    assert checks[(v1, "routed")].is_mismatch
    assert checks[(v1, "routed")].observed == {"base": 300, "fine_tuned": 200}
    assert not checks[(v2, "routed")].is_mismatch
    assert checks[(v2, "routed")].weights == {"base": 0.8, "fine_tuned": 0.2}


def test_srm_catches_a_variant_that_starts_too_few_of_its_jobs(migrated_url: str) -> None:
    crafter = Crafter(engine_for(migrated_url))
    version = set_weights(migrated_url, "ansel", {"base": 0.5, "fine_tuned": 0.5})
    base = crafter.queue(100, variant="base", weights_version=version)
    ft = crafter.queue(100, variant="fine_tuned", weights_version=version)
    for job_id in base + ft[:50]:
        crafter.start(job_id)

    checks = {c.stage: c for c in build_report(crafter.engine, days=1, advisor=None).srm}

    assert not checks["routed"].is_mismatch
    assert checks["started"].is_mismatch
    assert checks["started"].observed == {"base": 100, "fine_tuned": 50}


def test_score_copy_finds_outputs_that_share_their_seven_scores(migrated_url: str) -> None:
    crafter = Crafter(engine_for(migrated_url))
    for job_id in crafter.queue(8, variant="fine_tuned"):
        crafter.succeed(job_id, (8, 7, 9, 8, 7, 8, 9))
    for i, job_id in enumerate(crafter.queue(4, variant="base")):
        crafter.succeed(job_id, (1 + i, 5, 5, 5, 5, 5, 5))

    copies = {c.scope: c for c in build_report(crafter.engine, days=1, advisor=None).score_copy}

    assert (copies["fine_tuned"].copied, copies["fine_tuned"].outputs) == (8, 8)
    assert copies["fine_tuned"].is_suspicious
    assert copies["fine_tuned"].most_common == (((8, 7, 9, 8, 7, 8, 9), 8),)
    assert (copies["base"].copied, copies["base"].is_suspicious) == (0, False)
    assert copies["all"].share == pytest.approx(8 / 12)
    assert score_copy("x", [(1,) * 7, (2,) * 7, (1,) * 7]).copied == 2
