"""Plain-data views of jobs and rollouts, for --json output and other front ends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobs.models import Job
from jobs.rollouts import Weights


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def job_to_dict(job: Job) -> dict[str, Any]:
    """Every column of the job row; datetimes as ISO 8601 strings."""
    return {col.key: _plain(getattr(job, col.key)) for col in Job.__table__.columns}


def weights_to_dict(weights: Weights) -> dict[str, Any]:
    return {
        "advisor": weights.advisor,
        "weights": dict(weights.weights),
        "version": weights.version,
        "updated_at": _plain(weights.updated_at),
        "updated_by": weights.updated_by,
        "reason": weights.reason,
        "shadow": weights.shadow,
    }
