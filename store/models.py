"""SQLAlchemy tables: jobs, images, feedback, rollouts, history and plans, heartbeats, keys."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.instrumentation import manager_of_class

from jobs.contracts import IMAGE_REF_WIDTH, NAME_WIDTH

# Deterministic constraint names so migrations diff cleanly on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


UTCDateTime = DateTime(timezone=True)
M = TypeVar("M", bound=Base)


def detached(model: type[M], values: Mapping[str, Any]) -> M:
    """An instance of `model` holding `values` (column names), as a query would load it.

    These rows are read and written by Core statements and never join a session, so they skip
    the constructor's per-attribute events: at 20-45 columns those cost more than the rest of
    building a submit's row. A column not in `values` reads as None, as with the constructor.
    """
    # The constructor would configure the mappers first: attributes have no loader before.
    model.registry.configure()
    instance: M = manager_of_class(model).new_instance()
    vars(instance).update(values)
    return instance


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name="status_known",
        ),
        CheckConstraint(
            "assignment IN ('split', 'forced', 'fallback', 'shadow')", name="assignment_known"
        ),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index("ix_jobs_status_variant", "status", "variant"),
        Index("ix_jobs_advisor_queued_at", "advisor", "queued_at"),
        Index("ix_jobs_submitted_by_status", "submitted_by", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(NAME_WIDTH), unique=True)
    advisor: Mapped[str] = mapped_column(String(64))
    image_sha256: Mapped[str] = mapped_column(String(64))
    image_ref: Mapped[str] = mapped_column(String(IMAGE_REF_WIDTH))
    subject: Mapped[str] = mapped_column(String(NAME_WIDTH))
    variant: Mapped[str] = mapped_column(String(63))
    model_used: Mapped[str] = mapped_column(String(32))
    assignment: Mapped[str] = mapped_column(String(16))
    weights_version: Mapped[int] = mapped_column(Integer)
    base_model: Mapped[str | None] = mapped_column(String(500))
    adapter_fingerprint: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0)
    publish_error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queue_wait_ms: Mapped[int | None] = mapped_column(Integer)
    inference_ms: Mapped[int | None] = mapped_column(Integer)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    schema_version: Mapped[str | None] = mapped_column(String(32))
    llm_outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # llm_outputs' scores (store/scores.py), written with it: reports read numbers, not documents.
    overall_score: Mapped[float | None] = mapped_column(Float)
    dimension_scores: Mapped[list[int | None] | None] = mapped_column(JSON)
    raw_output: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    reassigned_from: Mapped[str | None] = mapped_column(String(63))
    reassigned_reason: Mapped[str | None] = mapped_column(Text)
    # Intake's facts (photos.intake.Photo.to_dict): format, size, orientation, profile, capture.
    photo: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prompt_version: Mapped[str | None] = mapped_column(String(32))
    # The image the model got, as the worker sized it, and what it cost in prompt tokens.
    model_image_width: Mapped[int | None] = mapped_column(Integer)
    model_image_height: Mapped[int | None] = mapped_column(Integer)
    image_tokens: Mapped[int | None] = mapped_column(Integer)
    # Set by a cancel of a running job; its worker polls for it and stops generating.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The API key (its name) that submitted the job over HTTP; None: CLI, library, no keys.
    submitted_by: Mapped[str | None] = mapped_column(String(64))

    # A shadow job (assignment `shadow`): the same photo on the other arm of its primary's
    # split, never returned to the caller.
    shadow_of: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )


class Delivery(Base):
    """The outbox: one notice of a job's outcome (a task or a webhook), written at submit.

    Due once its job is final; whoever claims it (the job's worker, else the sweep) sends it.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint("kind IN ('task', 'webhook')", name="kind_known"),
        CheckConstraint("state IN ('pending', 'delivered', 'undelivered')", name="state_known"),
        Index("ix_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    )

    # Also the X-Advisor-Delivery header and the task id: receivers dedupe on it.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    # The task name or the callback URL; `queue` is the task's queue.
    target: Mapped[str] = mapped_column(String(2048))
    queue: Mapped[str | None] = mapped_column(String(NAME_WIDTH))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # None: as soon as the job is final; else the next retry, after a failed attempt.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A sender holds the delivery until then; past it, the sweep may take it over.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # One entry per attempt: {at, by, ok, status_code, error, ms}.
    log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class StoredImage(Base):
    """Inline uploads, content-addressed, so any worker host and the republisher can read them."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Rollout(Base):
    """Current weights of one advisor; `version` increments on every change."""

    __tablename__ = "rollouts"

    advisor: Mapped[str] = mapped_column(String(64), primary_key=True)
    weights: Mapped[dict[str, float]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    # Share of split jobs also run on the other arm as shadow jobs (paired comparisons).
    shadow: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))


class RolloutEvent(Base):
    """Audit trail: who changed which weights, when, why, from what to what."""

    __tablename__ = "rollout_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    advisor: Mapped[str] = mapped_column(
        String(64), ForeignKey("rollouts.advisor", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    old_weights: Mapped[dict[str, float] | None] = mapped_column(JSON)
    new_weights: Mapped[dict[str, float]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    shadow: Mapped[float | None] = mapped_column(Float)
    # The statistics a guard decision was taken on (rule, method, counts, p-values).
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class RolloutPlan(Base):
    """A step plan for one advisor's candidate, moved forward by the guard loop.

    `open_advisor` is the advisor while the plan is active or paused and NULL once it ended:
    its unique constraint allows one open plan per advisor on SQLite and PostgreSQL alike.
    """

    __tablename__ = "rollout_plans"
    __table_args__ = (
        CheckConstraint(
            "status IN ('active', 'paused', 'completed', 'rolled_back', 'aborted')",
            name="status_known",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    advisor: Mapped[str] = mapped_column(String(64), index=True)
    open_advisor: Mapped[str | None] = mapped_column(String(64), unique=True)
    variant: Mapped[str] = mapped_column(String(63))
    steps: Mapped[list[float]] = mapped_column(JSON)  # the candidate's percentages
    step: Mapped[int] = mapped_column(Integer)  # index into steps of the applied one
    status: Mapped[str] = mapped_column(String(16))
    min_jobs: Mapped[int] = mapped_column(Integer)
    min_minutes: Mapped[float] = mapped_column(Float)
    margin: Mapped[float] = mapped_column(Float)
    # Compare-and-set: bumped by every change of the plan.
    version: Mapped[int] = mapped_column(Integer)
    # The rollout weights version the current step was applied at; its jobs are the evidence.
    weights_version: Mapped[int] = mapped_column(Integer)
    step_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(Text)  # why it holds, paused or ended, in one line
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # last check, workers needed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Feedback(Base):
    """The app's user's verdict on a critique: one row per (job, source); a repeat replaces it."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("job_id", "source"),
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(100))
    rating: Mapped[int] = mapped_column(Integer)
    helpful: Mapped[bool | None] = mapped_column(Boolean)
    comment: Mapped[str | None] = mapped_column(Text)
    # Written by `advisor demo --feedback`'s simulated raters, never by a person.
    simulated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkerHeartbeat(Base):
    """One row per worker process; producers read it to tell whether a queue has live workers."""

    __tablename__ = "worker_heartbeats"

    worker: Mapped[str] = mapped_column(String(200), primary_key=True)
    variant: Mapped[str] = mapped_column(String(63), index=True)
    queue: Mapped[str] = mapped_column(String(100))
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    base_model: Mapped[str] = mapped_column(String(500))
    adapter_fingerprint: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    current_job: Mapped[str | None] = mapped_column(String(36))
    load_seconds: Mapped[float | None] = mapped_column(Float)
    peak_rss_mb: Mapped[float | None] = mapped_column(Float)
    # ADVISOR_WORKER_BATCH of the worker, and how many of those rows hold a job now.
    slots: Mapped[int | None] = mapped_column(Integer)
    slots_in_use: Mapped[int | None] = mapped_column(Integer)


class ApiKey(Base):
    """A client's key for the gateway, stored only as its sha256; revoked keys are kept."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("scope IN ('intake', 'read')", name="scope_known"),)

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the key's start, to recognise it by
    # intake: POST /analyze and its own jobs; read: /dashboard/data, /report, /metrics.
    scope: Mapped[str] = mapped_column(String(16))
    # None: ADVISOR_KEY_RATE_PER_MINUTE / ADVISOR_KEY_MAX_IN_FLIGHT apply.
    rate_per_minute: Mapped[int | None] = mapped_column(Integer)
    max_in_flight: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
