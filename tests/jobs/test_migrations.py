"""Migrations run up, down and up again on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

from sqlalchemy import inspect

from jobs import migrate
from jobs.db import engine_for
from jobs.models import Base

EXPECTED_TABLES = {"jobs", "images", "rollouts", "rollout_events", "worker_heartbeats", "api_keys"}


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
