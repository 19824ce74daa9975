"""Plain-data views of jobs, rollouts and the registry, for --json output and other front ends."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jobs.contracts import DeliveryKind
from store.models import Delivery, Job

if TYPE_CHECKING:
    from jobs.variants import Registry
    from producers.rollouts import Weights


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def job_to_dict(job: Job) -> dict[str, Any]:
    """Every column of the job row; datetimes as ISO 8601 strings."""
    return {col.key: _plain(getattr(job, col.key)) for col in Job.__table__.columns}


def registry_to_dict(registry: Registry) -> dict[str, Any]:
    """Which registry this process uses, how it was found, and its base model."""
    location = registry.location.to_dict() if registry.location else {"path": None}
    return location | {
        "base_model": registry.base_model,
        "base_model_from": registry.base_model_from,
    }


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


def delivery_target(delivery: Delivery) -> str:
    """`task@queue`, or the callback URL without its query (which may carry a token)."""
    if delivery.kind == DeliveryKind.TASK:
        return f"{delivery.target}@{delivery.queue}"
    parts = urlsplit(delivery.target)
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return shown + ("?..." if parts.query else "")


# Fields of an attempt only the operator reads: the broker or socket detail behind `error`.
OPERATOR_ONLY = frozenset({"detail"})


def delivery_to_dict(delivery: Delivery, *, operator: bool = False) -> dict[str, Any]:
    """A delivery as its job shows it: where to, how it stands, and every attempt.

    The tenant's view (the default) reads each attempt's client text only, and its
    `last_error` is the last attempt's; `operator` adds the stored detail (hosts, driver text).
    """
    log = list(delivery.log or [])
    if operator:
        last_error = delivery.last_error
    else:
        log = [{k: v for k, v in entry.items() if k not in OPERATOR_ONLY} for entry in log]
        failed = delivery.last_error is not None and log and not log[-1].get("ok")
        last_error = log[-1].get("error") if failed else None
    return {
        "id": delivery.id,
        "kind": delivery.kind,
        "target": delivery_target(delivery),
        "state": delivery.state,
        "attempts": len(log),
        "next_attempt_at": _plain(delivery.next_attempt_at),
        "delivered_at": _plain(delivery.delivered_at),
        "last_error": last_error,
        "log": log,
    }
