"""Operations endpoints: /health, /metrics, /report and the token-protected /rollouts."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from producers import rollout
from producers.gateway.schemas import (
    PRINTABLE,
    HealthReport,
    RollbackPublic,
    RollbackRequest,
    RolloutPublic,
    RolloutUpdate,
    error_responses,
    rollout_public,
)
from producers.gateway.service import AuthorisedDep, GatewayDep
from producers.gateway.status import check_broker, health, queues_of
from producers.metrics import render_metrics
from producers.report import build_report

router = APIRouter()
MAX_REPORT_DAYS = 3650.0


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


@router.get(
    "/health",
    response_model=HealthReport,
    tags=["operations"],
    responses={503: {"model": HealthReport, "description": "database or broker down"}},
)
def get_health(response: Response, gateway: GatewayDep) -> HealthReport:
    report = health(gateway.client, gateway.client.publisher.app)
    if report.status == "down":
        response.status_code = 503
    return report


@router.get(
    "/metrics",
    tags=["operations"],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
               **error_responses(503)},
)  # fmt: skip
def get_metrics(gateway: GatewayDep) -> Response:
    """Prometheus text format; queue depths are left out while the broker is unreachable."""
    client = gateway.client
    queues = [queue for _variant, queue in queues_of(client)]
    broker = check_broker(client.publisher.app, client.settings.resolved_broker_url, queues)
    body = render_metrics(client.engine, client.settings, broker.depths if broker.ok else None)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/report", tags=["operations"], responses=error_responses(422, 503))
def get_report(
    gateway: GatewayDep,
    days: float = Query(default=7.0, gt=0, le=MAX_REPORT_DAYS, description="window in days"),
    advisor: str | None = Query(default=None, min_length=1, max_length=64, pattern=PRINTABLE),
) -> JSONResponse:
    """The A/B report (`advisor report --json`): outcomes, scores, Welch test, SRM checks."""
    report = build_report(gateway.client.engine, days=days, advisor=advisor)
    return JSONResponse(finite(report.to_dict()))


@router.get(
    "/rollouts",
    response_model=list[RolloutPublic],
    tags=["rollouts"],
    responses=error_responses(401, 503),
)
def get_rollouts(gateway: AuthorisedDep) -> list[RolloutPublic]:
    return [
        rollout_public(r.weights, r.variants, r.live_variants) for r in rollout.show(gateway.client)
    ]


def _actor(given: str | None) -> str:
    return given or f"gateway/{rollout.default_actor()}"


@router.put(
    "/rollouts/{advisor}",
    response_model=RolloutPublic,
    tags=["rollouts"],
    responses=error_responses(401, 422, 503),
)
def put_rollout(advisor: str, body: RolloutUpdate, gateway: AuthorisedDep) -> RolloutPublic:
    """Replace an advisor's weights (normalised, versioned, audited)."""
    client = gateway.client
    weights = rollout.set_weights(
        client, advisor, body.weights, reason=body.reason, actor=_actor(body.actor)
    )
    variants = sorted(rollout.serving_variants(client, advisor))
    live = client.repository.live_variants(client.settings.worker_live_window)
    return rollout_public(weights, variants, sorted(live & set(variants)))


@router.post(
    "/rollouts/{advisor}/rollback",
    response_model=RollbackPublic,
    tags=["rollouts"],
    responses=error_responses(401, 422, 503),
)
def post_rollback(advisor: str, body: RollbackRequest, gateway: AuthorisedDep) -> RollbackPublic:
    """Every non-base weight to 0; with `drain`, queued jobs move to base."""
    result = rollout.rollback(
        gateway.client, advisor, drain=body.drain, reason=body.reason, actor=_actor(body.actor)
    )
    w = result.weights
    return RollbackPublic(
        advisor=w.advisor, weights=dict(w.weights), version=w.version,
        drained=result.drained, republished=result.republished,
    )  # fmt: skip
