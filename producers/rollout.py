"""Rollout control: show, set and roll back per-advisor weights, with an optional drain."""

from __future__ import annotations

import getpass
import logging
import os
import socket
from dataclasses import dataclass

from jobs.advisors import get_persona, personas
from jobs.contracts import BASE_VARIANT, Status
from jobs.models import Job
from jobs.rollouts import Weights, default_weights
from producers.client import Client

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdvisorRollout:
    """An advisor's current weights and the variants that may serve it."""

    weights: Weights
    variants: list[str]
    live_variants: list[str]


@dataclass(frozen=True)
class RollbackResult:
    weights: Weights
    drained: list[str]  # job ids moved to base
    republished: int  # of those, sent to the base queue now (the rest: by the republisher)


def default_actor() -> str:
    """user@host for the audit trail, whatever the settings say."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        # No login name in a bare container: the uid still identifies the caller.
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def serving_variants(client: Client, advisor: str) -> set[str]:
    return {v.name for v in client.registry.variants_for(advisor)}


def show(client: Client) -> list[AdvisorRollout]:
    """Every known advisor (persona or with stored weights), defaults included."""
    stored = {w.advisor: w for w in client.rollouts.all()}
    live = client.repository.live_variants(client.settings.worker_live_window)
    rows = []
    for advisor in sorted(set(personas()) | set(stored)):
        weights = stored.get(advisor) or default_weights(advisor)
        variants = sorted(serving_variants(client, advisor))
        rows.append(AdvisorRollout(weights, variants, sorted(live & set(variants))))
    return rows


def set_weights(
    client: Client, advisor: str, weights: dict[str, float], *, reason: str, actor: str
) -> Weights:
    """Validated against the variants serving `advisor`, versioned and audited."""
    get_persona(advisor)
    result = client.rollouts.set(
        advisor, weights, known_variants=serving_variants(client, advisor),
        actor=actor, reason=reason,
    )  # fmt: skip
    client.router.invalidate()
    logger.info("%s weights -> %s (v%d) by %s: %s", advisor, result.weights, result.version,
                actor, reason)  # fmt: skip
    return result


def rollback(
    client: Client, advisor: str, *, drain: bool, reason: str, actor: str
) -> RollbackResult:
    """Every non-base weight to 0; with `drain`, move not-yet-started jobs back to base."""
    get_persona(advisor)
    serving = serving_variants(client, advisor)
    current = client.rollouts.get(advisor)
    others = (set(current.weights) | serving) - {BASE_VARIANT}
    weights = {BASE_VARIANT: 1.0} | {name: 0.0 for name in sorted(others & serving)}
    result = client.rollouts.set(
        advisor, weights, known_variants=serving, actor=actor, reason=reason, kind="rollback"
    )
    client.router.invalidate()
    logger.warning("%s rolled back to base (v%d) by %s: %s", advisor, result.version, actor,
                   reason)  # fmt: skip
    drained: list[str] = []
    republished = 0
    if drain:
        drained, republished = _drain(client, advisor, reason, result.weights)
    return RollbackResult(result, drained, republished)


def _drain(
    client: Client, advisor: str, reason: str, weights: dict[str, float]
) -> tuple[list[str], int]:
    """Queued jobs of non-base variants -> base. Their stale messages become no-ops for workers."""
    pending = client.repository.find(
        Job.advisor == advisor, Job.status == Status.QUEUED, Job.variant != BASE_VARIANT
    )
    base_model = client.registry.get(BASE_VARIANT).base_model
    moved = client.repository.reassign_queued(
        [job.id for job in pending], BASE_VARIANT, f"rollback drain: {reason}",
        weights=weights, base_model=base_model,
    )  # fmt: skip
    if not moved:
        return [], 0
    jobs = [client.repository.get(job_id) for job_id in moved]
    result = client.publish(jobs)
    logger.warning(
        "%s: drained %d queued job(s) to %s; %d republished now%s",
        advisor, len(moved), BASE_VARIANT, len(result.sent),
        f", the rest wait for `advisor republish` ({result.error})" if result.unsent else "",
    )  # fmt: skip
    return moved, len(result.sent)
