"""API keys of the gateway: created (shown once), stored as a sha256, listed and revoked."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from jobs.clock import as_utc, utcnow
from jobs.errors import KeyProblem
from store.models import ApiKey

KEY_PREFIX = "adv_"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class Scope(StrEnum):
    INTAKE = "intake"  # POST /analyze, and GET /jobs/* of its own jobs
    READ = "read"  # /dashboard/data, /report, /metrics


@dataclass(frozen=True)
class KeyInfo:
    """A key as the gateway and `advisor keys list` see it: never the key itself."""

    name: str
    key_hash: str
    prefix: str
    scope: Scope
    rate_per_minute: int | None
    max_in_flight: int | None
    created_at: datetime | None
    revoked_at: datetime | None

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


def hash_key(key: str) -> str:
    """Keys are 256 random bits: a plain sha256 is as hard to invert as the key to guess."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


class KeyStore:
    """The `api_keys` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        name: str,
        scope: Scope = Scope.INTAKE,
        *,
        rate_per_minute: int | None = None,
        max_in_flight: int | None = None,
    ) -> tuple[KeyInfo, str]:
        """A new key under `name`; the key itself is returned once and never stored."""
        if not _NAME.match(name):
            raise KeyProblem(
                f"Key name {name[:80]!r}: use 1-64 lowercase letters, digits, '.', '_' or '-'"
            )
        for limit, what in ((rate_per_minute, "rate per minute"), (max_in_flight, "in-flight")):
            if limit is not None and limit < 1:
                raise KeyProblem(f"The {what} limit must be at least 1, got {limit}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        values = {
            "name": name, "key_hash": hash_key(key), "prefix": key[:10], "scope": scope.value,
            "rate_per_minute": rate_per_minute, "max_in_flight": max_in_flight,
            "created_at": utcnow(), "revoked_at": None,
        }  # fmt: skip
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(ApiKey).values(**values))
        except IntegrityError as exc:
            raise KeyProblem(
                f"A key named {name!r} exists already (revoked keys keep their name); choose "
                "another name"
            ) from exc
        return _info(values), key

    def all(self) -> list[KeyInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(ApiKey).order_by(ApiKey.created_at, ApiKey.name))
            return [_info(row._mapping) for row in rows]

    def revoke(self, name: str) -> KeyInfo:
        """Revoked at once in the table; gateways stop accepting it within their refresh."""
        with self.engine.begin() as conn:
            conn.execute(
                update(ApiKey)
                .where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            row = conn.execute(select(ApiKey).where(ApiKey.name == name)).first()
        if row is None:
            raise KeyProblem(f"No key named {name[:80]!r}; `advisor keys list` shows them")
        return _info(row._mapping)


def _info(row: Mapping[Any, Any]) -> KeyInfo:
    get = row.__getitem__
    return KeyInfo(
        name=get("name"), key_hash=get("key_hash"), prefix=get("prefix"), scope=Scope(get("scope")),
        rate_per_minute=get("rate_per_minute"), max_in_flight=get("max_in_flight"),
        created_at=as_utc(get("created_at")), revoked_at=as_utc(get("revoked_at")),
    )  # fmt: skip
