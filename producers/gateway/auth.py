"""Who is calling: the operator, an API key, or anyone (while the gateway is open).

The gateway is open, as the seed's curl example expects, until the first API key exists
(`advisor keys create`) or ADVISOR_GATEWAY_REQUIRE_KEYS=true; from then on every intake call needs
`Authorization: Bearer KEY` (or the operator token, ADVISOR_GATEWAY_TOKEN). Revoking every
key does not reopen it. Endpoints take a Caller through IntakeDep or ReaderDep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.concurrency import run_in_threadpool

from producers.gateway.errors import Forbidden, Unauthorized
from producers.gateway.service import Credentials, GatewayDep
from producers.keys import KeyInfo, Scope
from store.models import Job


@dataclass(frozen=True)
class Caller:
    """The operator (token), an API key, or anyone (open gateway: both None/False)."""

    key: KeyInfo | None = None
    is_operator: bool = False
    is_open: bool = False  # no key exists yet: anyone may call

    @property
    def name(self) -> str | None:
        return self.key.name if self.key is not None else None

    def may_see(self, job: Job) -> bool:
        """A key sees only the jobs it submitted; the operator and an open gateway, all."""
        return self.key is None or job.submitted_by == self.key.name


async def resolve(gateway: GatewayDep, credentials: Credentials, scope: Scope) -> Caller:
    """The caller of an endpoint that needs `scope`; 401/403 if it may not call it."""
    given = credentials.credentials if credentials is not None else None
    if given is not None and gateway.is_operator(given):
        return Caller(is_operator=True)
    any_keys, info = await run_in_threadpool(gateway.keys.lookup, given)
    if not any_keys and not gateway.settings.gateway_require_keys:
        return Caller(is_open=True)
    if info is None or info.is_revoked:
        raise Unauthorized(
            "Missing, unknown or revoked API key: send `Authorization: Bearer <key>` with a key "
            "from `advisor keys create`"
        )
    if info.scope is not scope:
        raise Forbidden(f"Key {info.name!r} is {_a(info.scope.value)} key; this needs "
                        f"{_a(scope.value)} key or the operator token")  # fmt: skip
    return Caller(key=info)


def _a(word: str) -> str:
    """`word` with its indefinite article: "an intake", "a read"."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


async def intake_caller(gateway: GatewayDep, credentials: Credentials) -> Caller:
    """POST /analyze, GET /jobs/*: an intake key, the operator token, or an open gateway."""
    return await resolve(gateway, credentials, Scope.INTAKE)


async def reader_caller(gateway: GatewayDep, credentials: Credentials) -> Caller:
    """/dashboard/data, /report, /metrics: a read-only key, the operator token, or open."""
    return await resolve(gateway, credentials, Scope.READ)


IntakeDep = Annotated[Caller, Depends(intake_caller)]
ReaderDep = Annotated[Caller, Depends(reader_caller)]
