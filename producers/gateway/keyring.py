"""The gateway's view of the API keys (re-read every few seconds) and its per-key rate limits."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from producers.keys import KeyInfo, KeyStore, hash_key


@dataclass(frozen=True)
class _Snapshot:
    by_hash: dict[str, KeyInfo]
    any_keys: bool  # revoked ones count: revoking the last key must not open the gateway
    read_at: float


class KeyRing:
    """The keys table as this gateway last read it; re-read every `refresh` seconds."""

    def __init__(self, store: KeyStore, refresh: float) -> None:
        self.store = store
        self.refresh = refresh
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None

    def lookup(self, key: str | None) -> tuple[bool, KeyInfo | None]:
        """(whether any key exists, the presented key's row if it is one)."""
        snapshot = self._current()
        info = snapshot.by_hash.get(hash_key(key)) if key else None
        return snapshot.any_keys, info

    def _current(self) -> _Snapshot:
        with self._lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._snapshot.read_at >= self.refresh:
                keys = self.store.all()
                self._snapshot = _Snapshot({k.key_hash: k for k in keys}, bool(keys), now)
            return self._snapshot

    def forget(self) -> None:
        with self._lock:
            self._snapshot = None


class RateLimiter:
    """A token bucket per key: `per_minute` submits a minute, bursts of up to as many."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, when)

    def take(self, name: str, per_minute: int, now: float | None = None) -> float:
        """0.0 when a submit may go now (and it is counted); else the seconds to wait."""
        now = time.monotonic() if now is None else now
        rate = per_minute / 60.0
        with self._lock:
            tokens, then = self._buckets.get(name, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - then) * rate)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / rate
