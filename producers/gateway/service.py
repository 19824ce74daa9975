"""The gateway's process-wide state: its settings and one Client (a broker pool, an engine)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from jobs.settings import Settings
from producers.client import Client
from producers.gateway.errors import RolloutsDisabled, Unauthorized

bearer = HTTPBearer(auto_error=False, description="the value of ADVISOR_GATEWAY_TOKEN")


@dataclass
class Gateway:
    settings: Settings
    client: Client

    def check_token(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        expected = self.settings.gateway_token
        if expected is None or not expected.get_secret_value():
            raise RolloutsDisabled(
                "The rollout endpoints are disabled: set ADVISOR_GATEWAY_TOKEN to a secret "
                "and send it as `Authorization: Bearer <token>`"
            )
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
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
