"""The gateway's process-wide state: the pieces the endpoints use, all from one Services."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from jobs.settings import Settings
from jobs.variants import Registry
from producers.client import Client
from producers.gateway.errors import RolloutsDisabled, Unauthorized
from producers.gateway.keyring import KeyRing, RateLimiter
from producers.gateway.limits import Slots
from producers.ops.plan_hook import hook_for
from producers.ops.plans import PlanControl
from producers.ops.rollout import RolloutControl
from producers.plans import PlanStore
from producers.services import Services
from store.repository import Repository

bearer = HTTPBearer(auto_error=False, description="the value of ADVISOR_GATEWAY_TOKEN")


@dataclass(frozen=True)
class Gateway:
    settings: Settings
    client: Client  # submit, status, wait
    engine: Engine
    repository: Repository
    registry: Registry
    rollouts: RolloutControl
    broker: Celery  # the publisher's app, asked for queue depths
    keys: KeyRing
    limiter: RateLimiter
    streams: Slots  # GET /jobs/{id}/events held open
    waits: Slots  # POST /analyze?wait=... waiting
    plans: PlanControl
    # The image roots are the embedded default (the working directory of a loopback
    # gateway): paths are for the open gateway only, not once keys exist.
    local_paths: bool = False

    @classmethod
    def of(cls, services: Services, *, local_paths: bool = False) -> Gateway:
        """The endpoints' pieces from `services`: one engine, router and broker pool for all."""
        settings = services.settings
        rollouts = RolloutControl(
            services.registry, services.rollouts, services.repository, services.router,
            services.outbox, live_window=settings.worker_live_window,
        )  # fmt: skip
        keys = KeyRing(services.keys, settings.gateway_keys_refresh_seconds)
        plans = PlanControl(
            services.engine, services.registry, services.rollouts, PlanStore(services.engine),
            on_weights=services.router.invalidate, hook=hook_for(settings),
        )  # fmt: skip
        return cls(
            settings, Client(services=services), services.engine, services.repository,
            services.registry, rollouts, services.broker, keys, RateLimiter(),
            Slots(settings.gateway_max_streams, "event streams (ADVISOR_GATEWAY_MAX_STREAMS)"),
            Slots(settings.gateway_max_waits, "waiting requests (ADVISOR_GATEWAY_MAX_WAITS)"),
            plans,
            local_paths,
        )  # fmt: skip

    def is_operator(self, token: str) -> bool:
        """`token` is ADVISOR_GATEWAY_TOKEN (compared in constant time); never with none set."""
        expected = self.settings.gateway_token
        if expected is None or not expected.get_secret_value():
            return False
        return secrets.compare_digest(
            token.encode("utf-8", "replace"), expected.get_secret_value().encode()
        )

    def check_token(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        expected = self.settings.gateway_token
        if expected is None or not expected.get_secret_value():
            raise RolloutsDisabled(
                "The rollout endpoints are disabled: set ADVISOR_GATEWAY_TOKEN to a secret "
                "and send it as `Authorization: Bearer <token>`"
            )
        given = credentials.credentials if credentials is not None else ""
        if not self.is_operator(given):
            raise Unauthorized(
                "Missing or wrong bearer token: send `Authorization: Bearer <token>` with the "
                "value of ADVISOR_GATEWAY_TOKEN"
            )


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def authorised(gateway: GatewayDep, credentials: Credentials) -> Gateway:
    """A dependency: the gateway, once the caller showed the rollout token."""
    gateway.check_token(credentials)
    return gateway


AuthorisedDep = Annotated[Gateway, Depends(authorised)]
