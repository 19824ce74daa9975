"""The router: a weighted, sticky choice of variant per job, with live weights and fallback."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from jobs.contracts import BASE_VARIANT, Assignment, ModelUsed, model_used_for
from jobs.errors import UnknownVariant
from jobs.settings import Settings
from jobs.variants import Registry
from producers.rollouts import RolloutStore, Weights
from store.repository import Repository

logger = logging.getLogger(__name__)

_BUCKET_BITS = 64
T = TypeVar("T")


@dataclass(frozen=True)
class Decision:
    """Where one job goes and why."""

    variant: str
    assignment: Assignment
    weights_version: int
    bucket: float
    model_used: ModelUsed


def bucket_of(salt: str, subject: str) -> float:
    """sha256(f"{salt}:{subject}") mapped to [0, 1); independent of the weights version."""
    digest = hashlib.sha256(f"{salt}:{subject}".encode()).digest()
    return int.from_bytes(digest[: _BUCKET_BITS // 8], "big") / 2**_BUCKET_BITS


def split_order(weights: dict[str, float]) -> list[tuple[str, float]]:
    """Non-base variants by name, base last: raising a fine-tuned weight only adds buckets to it."""
    return sorted(weights.items(), key=lambda kv: (kv[0] == BASE_VARIANT, kv[0]))


def other_arm(weights: dict[str, float], variant: str) -> str | None:
    """The arm a shadow of a job on `variant` runs on: base for a candidate's job; for a base
    job the candidate (the heaviest non-base variant named, even at weight 0: a dark launch)."""
    if variant != BASE_VARIANT:
        return BASE_VARIANT
    named = [(w, name) for name, w in weights.items() if name != BASE_VARIANT]
    return sorted(named, key=lambda wn: (-wn[0], wn[1]))[0][1] if named else None


def choose(weights: dict[str, float], bucket: float) -> str:
    """The variant whose cumulative interval holds `bucket`; zero-weight variants never win."""
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        return BASE_VARIANT
    edge = 0.0
    for name, weight in split_order(weights):
        if weight <= 0:
            continue
        edge += weight / total
        if bucket < edge:
            return name
    # Rounding can leave the top sliver of [0, 1) uncovered; it belongs to the last interval.
    return [name for name, weight in split_order(weights) if weight > 0][-1]


class _Cached(Generic[T]):
    """One value refreshed at most every `ttl` seconds (0: always refreshed)."""

    def __init__(self, ttl: float, load: Callable[[], T]) -> None:
        self.ttl, self.load = ttl, load
        self.value: T | None = None
        self.fetched = float("-inf")

    def get(self) -> T:
        now = time.monotonic()
        if self.value is None or now - self.fetched >= self.ttl:
            self.value, self.fetched = self.load(), now
        return self.value


class Router:
    """Chooses a variant per job from the database weights, cached `weights_cache_seconds`."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        rollouts: RolloutStore,
        repository: Repository,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.rollouts = rollouts
        self._ttl = settings.weights_cache_seconds
        self._lock = threading.Lock()
        self._weights: dict[str, _Cached[Weights]] = {}
        # Heartbeats change slowly compared to submits; the same short cache bounds DB reads.
        self._live = _Cached(
            self._ttl, lambda: repository.live_variants(settings.worker_live_window)
        )

    def weights(self, advisor: str) -> Weights:
        with self._lock:
            cached = self._weights.get(advisor)
            if cached is None:
                cached = self._weights[advisor] = _Cached(
                    self._ttl, lambda: self.rollouts.get(advisor)
                )
            return cached.get()

    def live_variants(self) -> set[str]:
        with self._lock:
            return self._live.get()

    def invalidate(self) -> None:
        """Forget cached weights and heartbeats (after this process changed them itself)."""
        with self._lock:
            self._weights.clear()
            self._live.fetched = float("-inf")

    def serving(self, advisor: str) -> list[str]:
        return sorted(v.name for v in self.registry.variants_for(advisor))

    def decide(self, advisor: str, subject: str, variant: str | None = None) -> Decision:
        bucket = bucket_of(self.settings.router_salt, subject)
        current = self.weights(advisor)
        if variant is not None:
            self._check_forced(advisor, variant)
            if variant != BASE_VARIANT and variant not in self.live_variants():
                logger.warning(
                    "%s: forced variant %s has no live worker; it waits", advisor, variant
                )
            return self._decision(variant, Assignment.FORCED, current, bucket)
        chosen = choose(current.weights, bucket)
        reason = self._unusable(advisor, chosen)
        if reason is not None:
            logger.info(
                "%s: %s %s; sending to %s (fallback)", advisor, chosen, reason, BASE_VARIANT
            )
            return self._decision(BASE_VARIANT, Assignment.FALLBACK, current, bucket)
        return self._decision(chosen, Assignment.SPLIT, current, bucket)

    @staticmethod
    def _decision(
        variant: str, assignment: Assignment, weights: Weights, bucket: float
    ) -> Decision:
        used = model_used_for(variant, assignment, weights.weights)
        return Decision(variant, assignment, weights.version, bucket, used)

    def shadow_for(self, advisor: str, decision: Decision, job_id: str) -> str | None:
        """Where this split job's shadow runs, or None: not drawn (the advisor's shadow share,
        by a hash of the job id), no other arm, or that arm has no live worker."""
        if decision.assignment is not Assignment.SPLIT:
            return None
        current = self.weights(advisor)
        if bucket_of(f"{self.settings.router_salt}:shadow", job_id) >= current.shadow:
            return None
        other = other_arm(current.weights, decision.variant)
        if other is None or self._unusable(advisor, other) is not None:
            return None
        return other

    def _check_forced(self, advisor: str, variant: str) -> None:
        serving = self.serving(advisor)
        if variant not in serving:
            raise UnknownVariant(
                f"Unknown variant {variant!r} for advisor {advisor!r}; known: {serving}"
            )

    def _unusable(self, advisor: str, chosen: str) -> str | None:
        """Why the split's choice cannot take the job, or None if it can."""
        if chosen == BASE_VARIANT:
            return None
        if chosen not in self.registry.variants:
            return "is not in the registry"
        if not self.registry.variants[chosen].serves(advisor):
            return "does not serve this advisor"
        if chosen not in self.live_variants():
            return f"has no live worker (no heartbeat in {self.settings.worker_live_window:g}s)"
        return None
