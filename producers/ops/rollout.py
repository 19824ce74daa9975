"""Rollout control: show, set and roll back per-advisor weights, with an optional drain."""

from __future__ import annotations

import getpass
import logging
import os
import socket
from dataclasses import dataclass

from jobs.advisors import get_persona, personas
from jobs.contracts import BASE_VARIANT, ErrorKind, Status
from jobs.variants import Registry
from producers.outbox import Outbox
from producers.rollouts import RolloutStore, Weights, default_weights
from producers.router import Router
from store.models import Job
from store.repository import Repository

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


class RolloutControl:
    """Changes an advisor's split; this process's `router` forgets its cached weights at once."""

    def __init__(
        self,
        registry: Registry,
        rollouts: RolloutStore,
        repository: Repository,
        router: Router,
        outbox: Outbox,
        *,
        live_window: float,
    ) -> None:
        self.registry = registry
        self.rollouts = rollouts
        self.repository = repository
        self.router = router
        self.outbox = outbox  # a drain publishes the moved jobs through it
        self.live_window = live_window

    def serving(self, advisor: str) -> set[str]:
        return {v.name for v in self.registry.variants_for(advisor)}

    def describe(self, weights: Weights, live: set[str] | None = None) -> AdvisorRollout:
        """`weights` with the variants that may serve its advisor and, of those, the live ones."""
        variants = sorted(self.serving(weights.advisor))
        live = self.repository.live_variants(self.live_window) if live is None else live
        return AdvisorRollout(weights, variants, sorted(live & set(variants)))

    def show(self) -> list[AdvisorRollout]:
        """Every known advisor (persona or with stored weights), defaults included."""
        stored = {w.advisor: w for w in self.rollouts.all()}
        live = self.repository.live_variants(self.live_window)
        return [
            self.describe(stored.get(advisor) or default_weights(advisor), live)
            for advisor in sorted(set(personas()) | set(stored))
        ]

    def set_weights(
        self,
        advisor: str,
        weights: dict[str, float],
        *,
        reason: str,
        actor: str,
        shadow: float | None = None,
        expected_version: int | None = None,
    ) -> Weights:
        """Validated against the variants serving `advisor`, versioned and audited.

        `shadow`: the share of split jobs also run on the other arm (None keeps the current).
        With `expected_version`, only if the weights are still at that version (StaleVersion).
        """
        get_persona(advisor)
        result = self.rollouts.set(
            advisor, weights, known_variants=self.serving(advisor), actor=actor, reason=reason,
            shadow=shadow, expected_version=expected_version,
        )  # fmt: skip
        self.router.invalidate()
        logger.info("%s weights -> %s, shadow %.2f (v%d) by %s: %s", advisor, result.weights,
                    result.shadow, result.version, actor, reason)  # fmt: skip
        return result

    def rollback(
        self,
        advisor: str,
        *,
        drain: bool,
        reason: str,
        actor: str,
        expected_version: int | None = None,
    ) -> RollbackResult:
        """Every non-base weight to 0; with `drain`, move not-yet-started jobs back to base.

        Written only over the version read here (or `expected_version`, if given).
        """
        get_persona(advisor)
        serving = self.serving(advisor)
        current = self.rollouts.get(advisor)
        others = (set(current.weights) | serving) - {BASE_VARIANT}
        weights = {BASE_VARIANT: 1.0} | {name: 0.0 for name in sorted(others & serving)}
        # Shadows stop too: a rolled-back candidate is not worth the idle time.
        result = self.rollouts.set(
            advisor, weights, known_variants=serving, actor=actor, reason=reason,
            kind="rollback", shadow=0.0,
            expected_version=current.version if expected_version is None else expected_version,
        )  # fmt: skip
        self.router.invalidate()
        logger.warning("%s rolled back to base (v%d) by %s: %s", advisor, result.version, actor,
                       reason)  # fmt: skip
        drained: list[str] = []
        republished = 0
        if drain:
            drained, republished = self._drain(advisor, reason, result.weights)
        return RollbackResult(result, drained, republished)

    def _drain(self, advisor: str, reason: str, weights: dict[str, float]) -> tuple[list[str], int]:
        """Queued jobs of non-base variants -> base; their stale messages become no-ops.

        Queued shadow jobs there are dropped instead: on base they would pair base with itself.
        """
        pending = self.repository.find(
            Job.advisor == advisor, Job.status == Status.QUEUED, Job.variant != BASE_VARIANT
        )
        for shadow in [job for job in pending if job.shadow_of is not None]:
            self.repository.fail(shadow.id, ErrorKind.SHADOW_DROPPED, f"rollback: {reason}")
        pending = [job for job in pending if job.shadow_of is None]
        moved = self.repository.reassign_queued(
            [job.id for job in pending], BASE_VARIANT, f"rollback drain: {reason}",
            weights=weights, base_model=self.registry.get(BASE_VARIANT).base_model,
        )  # fmt: skip
        if not moved:
            return [], 0
        result = self.outbox.publish([self.repository.get(job_id) for job_id in moved])
        logger.warning(
            "%s: drained %d queued job(s) to %s; %d republished now%s",
            advisor, len(moved), BASE_VARIANT, len(result.sent),
            f", the rest wait for `advisor republish` ({result.error})" if result.unsent else "",
        )  # fmt: skip
        return moved, len(result.sent)
