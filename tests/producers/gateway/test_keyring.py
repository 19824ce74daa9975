"""The gateway's key cache and per-key rate limit, without a server."""

from __future__ import annotations

import pytest

from producers.gateway.keyring import KeyRing, RateLimiter
from producers.keys import KeyStore
from store.db import engine_for


def test_the_bucket_allows_a_burst_then_one_submit_per_interval() -> None:
    limiter = RateLimiter()
    assert [limiter.take("app", 3, now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("app", 3, now=100.0) == pytest.approx(20.0)
    assert limiter.take("app", 3, now=110.0) == pytest.approx(10.0)
    assert limiter.take("app", 3, now=120.0) == 0.0
    assert limiter.take("other", 3, now=120.0) == 0.0  # one bucket per key


def test_a_revoked_key_is_refused_once_the_ring_rereads_and_keys_keep_the_gate_shut(
    sqlite_url: str,
) -> None:
    from store import migrate

    migrate.upgrade(sqlite_url)
    store = KeyStore(engine_for(sqlite_url))
    ring = KeyRing(store, refresh=0.0)
    assert ring.lookup(None) == (False, None)
    _info, key = store.create("app")
    exists, info = ring.lookup(key)
    assert exists and info is not None and info.name == "app" and not info.is_revoked
    store.revoke("app")
    exists, info = ring.lookup(key)
    assert exists and info is not None and info.is_revoked
    assert ring.lookup("adv_not-a-key") == (True, None)
