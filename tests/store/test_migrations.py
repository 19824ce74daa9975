"""Migrations run up, down and up again on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from jobs.analysis import DIMENSIONS
from store import migrate
from store.db import engine_for
from store.models import Base, Job
from store.scores import stored_scores

EXPECTED_TABLES = {
    "jobs", "images", "feedback", "rollouts", "rollout_events", "worker_heartbeats",
    "deliveries", "api_keys", "rollout_plans",
}  # fmt: skip


def table_names(url: str) -> set[str]:
    return set(inspect(engine_for(url)).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade_leaves_no_drift(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert table_names(database_url) == EXPECTED_TABLES
    migrate.downgrade(database_url)
    assert table_names(database_url) == set()
    migrate.upgrade(database_url)
    assert table_names(database_url) == EXPECTED_TABLES
    migrate.check(database_url)


def test_jobs_table_has_every_column_the_design_lists(migrated_url: str) -> None:
    columns = {c["name"] for c in inspect(engine_for(migrated_url)).get_columns("jobs")}
    design = set(
        [
            "id",
            "idempotency_key",
            "advisor",
            "image_sha256",
            "image_ref",
            "subject",
            "variant",
            "model_used",
            "assignment",
            "weights_version",
            "base_model",
            "adapter_fingerprint",
            "status",
            "attempts",
            "worker",
            "queued_at",
            "started_at",
            "completed_at",
            "queue_wait_ms",
            "inference_ms",
            "prompt_tokens",
            "output_tokens",
            "progress",
            "llm_outputs",
            "raw_output",
            "error_kind",
            "error",
        ]
    )
    assert design <= columns, sorted(design - columns)


def test_constraint_names_are_deterministic(migrated_url: str) -> None:
    checks = {c["name"] for c in inspect(engine_for(migrated_url)).get_check_constraints("jobs")}
    assert {"ck_jobs_status_known", "ck_jobs_assignment_known"} <= checks
    uniques = inspect(engine_for(migrated_url)).get_unique_constraints("jobs")
    assert [u["name"] for u in uniques] == ["uq_jobs_idempotency_key"]
    assert Base.metadata.tables.keys() == EXPECTED_TABLES


def test_the_photo_intake_revision_adds_and_removes_its_columns(database_url: str) -> None:
    added = {"photo", "prompt_version", "model_image_width", "model_image_height", "image_tokens"}

    def columns() -> set[str]:
        return {c["name"] for c in inspect(engine_for(database_url)).get_columns("jobs")}

    migrate.upgrade(database_url, "0001")
    assert not added & columns()
    migrate.upgrade(database_url)
    assert added <= columns()
    migrate.downgrade(database_url, "0001")
    assert not added & columns()
    migrate.upgrade(database_url)
    migrate.check(database_url)


def test_the_feedback_and_shadow_migration_keeps_jobs_and_checks_assignments(
    database_url: str,
) -> None:
    migrate.upgrade(database_url, "0004")
    engine = engine_for(database_url)
    columns = (
        "id, advisor, image_sha256, image_ref, subject, variant, model_used, assignment, "
        "weights_version, status, attempts, queued_at, publish_attempts, progress"
    )
    insert = text(
        f"INSERT INTO jobs ({columns}) VALUES (:id, 'ansel', 'x', 'sha256:x', 's', 'base', "
        "'base', :assignment, 1, 'queued', 0, CURRENT_TIMESTAMP, 0, 0)"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"id": "before", "assignment": "split"})
    migrate.upgrade(database_url)
    with engine.begin() as conn:
        conn.execute(insert, {"id": "pair", "assignment": "shadow"})
        assert conn.execute(text("SELECT shadow FROM rollouts")).all() == []
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"id": "bad", "assignment": "bogus"})
    migrate.downgrade(database_url, "0004")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM jobs")).scalars().all() == ["before"]


def test_the_rollout_plans_revision_adds_and_removes_only_its_table(database_url: str) -> None:
    migrate.upgrade(database_url, "0006")
    assert "rollout_plans" not in table_names(database_url)
    migrate.upgrade(database_url)
    assert "rollout_plans" in table_names(database_url)
    migrate.downgrade(database_url, "0006")
    assert table_names(database_url) == EXPECTED_TABLES - {"rollout_plans"}
    migrate.upgrade(database_url)
    migrate.check(database_url)


# A succeeded job as revision 0007 stores it, its analysis document in :doc.
SUCCEEDED_AT_0007 = text(
    "INSERT INTO jobs (id, advisor, image_sha256, image_ref, subject, variant, model_used, "
    "assignment, weights_version, status, attempts, queued_at, publish_attempts, progress, "
    "llm_outputs) VALUES (:id, 'ansel', 'x', 'sha256:x', 's', 'base', 'base', 'split', 1, "
    "'succeeded', 1, CURRENT_TIMESTAMP, 0, 0, :doc)"
)


def test_the_stored_scores_revision_backfills_each_analysis_and_removes_its_columns(
    database_url: str,
) -> None:
    migrate.upgrade(database_url, "0007")
    engine = engine_for(database_url)
    insert = SUCCEEDED_AT_0007
    whole = {"overall_score": 6.43, "dimensions": [
        {"name": n, "score": s} for n, s in zip(DIMENSIONS, (7, 6, 8, 5, 6, 7, 6), strict=True)
    ]}  # fmt: skip
    # An older shape: dimensions out of order, one missing, a score that is not a number.
    odd = {"overall_score": 5, "dimensions": [
        {"name": DIMENSIONS[2], "score": 4}, {"name": DIMENSIONS[0], "score": 9},
        {"name": DIMENSIONS[1], "score": "high"},
    ]}  # fmt: skip
    with engine.begin() as conn:
        for job_id, doc in (("whole", whole), ("odd", odd), ("none", None)):
            conn.execute(insert, {"id": job_id, "doc": None if doc is None else json.dumps(doc)})
    migrate.upgrade(database_url)
    with engine.connect() as conn:
        stored = {
            r.id: (r.overall_score, r.dimension_scores)
            for r in conn.execute(select(Job.id, Job.overall_score, Job.dimension_scores))
        }
    assert stored == {
        "whole": (6.43, [7, 6, 8, 5, 6, 7, 6]),
        "odd": (5.0, [9, None, 4, None, None, None, None]),
        "none": (None, None),
    }
    migrate.downgrade(database_url, "0007")
    names = {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert "llm_outputs" in names and not names & {"overall_score", "dimension_scores"}
    migrate.upgrade(database_url)
    migrate.check(database_url)


def test_the_stored_scores_backfill_gives_what_stored_scores_gives_for_varied_documents(
    database_url: str,
) -> None:
    named = [{"name": n, "score": s} for n, s in zip(DIMENSIONS, range(1, 8), strict=True)]
    docs: dict[str, Any] = {
        "whole": {"overall_score": 6.43, "dimensions": named},
        "no keys": {},
        "strings": {"overall_score": "7", "dimensions": [{"name": DIMENSIONS[0], "score": "9"}]},
        "booleans": {"overall_score": True,
                     "dimensions": [{"name": DIMENSIONS[0], "score": False}]},
        "fractions": {"overall_score": 0, "dimensions": [{"name": DIMENSIONS[1], "score": 7.9}]},
        "repeated name": {"dimensions": [{"name": DIMENSIONS[2], "score": None},
                                         {"name": DIMENSIONS[2], "score": 8}]},
        "odd dimensions": {"overall_score": -1.5, "dimensions": [5, "x", None, [1],
                                                                {"score": 4}, {"name": 3}]},
        "dimensions not a list": {"overall_score": 4, "dimensions": {"name": DIMENSIONS[0]}},
        "not an object": [1, 2, 3],
        "a string": "text",
        "huge": {"overall_score": 1.5e308, "dimensions": named[:2]},
    }  # fmt: skip
    if database_url.startswith("sqlite"):
        # PostgreSQL's json refuses these; SQLite stores what Python's json writes.
        docs["nan"] = {"overall_score": math.nan, "dimensions": [{"name": DIMENSIONS[0],
                                                                  "score": math.inf}]}  # fmt: skip
    migrate.upgrade(database_url, "0007")
    engine = engine_for(database_url)
    insert = SUCCEEDED_AT_0007
    with engine.begin() as conn:
        for job_id, doc in docs.items():
            conn.execute(insert, {"id": job_id, "doc": json.dumps(doc)})
    migrate.upgrade(database_url)
    with engine.connect() as conn:
        stored = {
            r.id: {"overall_score": r.overall_score, "dimension_scores": r.dimension_scores}
            for r in conn.execute(select(Job.id, Job.overall_score, Job.dimension_scores))
        }
    expected = {job_id: stored_scores(doc if isinstance(doc, dict) else None)
                for job_id, doc in docs.items()}  # fmt: skip
    assert stored == expected
    assert stored["whole"]["dimension_scores"] == [1, 2, 3, 4, 5, 6, 7]
