"""API keys: shown once, stored as a digest, listed without the key, revoked for good."""

from __future__ import annotations

import pytest

from jobs.errors import KeyProblem
from producers.keys import KeyStore, Scope, hash_key
from store.db import engine_for


@pytest.fixture
def store(migrated_url: str) -> KeyStore:
    return KeyStore(engine_for(migrated_url))


def test_a_key_is_returned_once_and_only_its_digest_is_stored(store: KeyStore) -> None:
    info, key = store.create("photo-app", rate_per_minute=5)
    assert key.startswith("adv_") and len(key) > 40
    [listed] = store.all()
    assert listed.key_hash == hash_key(key) != key
    assert (listed.name, listed.scope, listed.rate_per_minute) == ("photo-app", Scope.INTAKE, 5)
    assert key.startswith(listed.prefix) and len(listed.prefix) < 12
    with store.engine.connect() as conn:
        dump = " ".join(str(v) for row in conn.exec_driver_sql("SELECT * FROM api_keys")
                        for v in row)  # fmt: skip
    assert key not in dump


def test_names_are_unique_even_after_revocation_and_must_be_plain(store: KeyStore) -> None:
    store.create("app")
    revoked = store.revoke("app")
    assert revoked.is_revoked
    with pytest.raises(KeyProblem, match="exists already"):
        store.create("app")
    for bad in ("App", "", "a b", "x" * 65, "nul\x00"):
        with pytest.raises(KeyProblem, match="Key name"):
            store.create(bad)
    with pytest.raises(KeyProblem, match="No key named 'ghost'"):
        store.revoke("ghost")
    with pytest.raises(KeyProblem, match="at least 1"):
        store.create("zero", max_in_flight=0)


def test_a_read_only_key_has_its_own_scope(store: KeyStore) -> None:
    info, _key = store.create("grafana", Scope.READ)
    assert store.all()[0].scope is Scope.READ is info.scope
