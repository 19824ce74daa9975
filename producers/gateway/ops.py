"""Operations endpoints: /health, /metrics, /report and the token-protected /rollouts."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from producers.gateway.auth import ReaderDep
from producers.gateway.schemas import (
    PRINTABLE,
    AdvisorPath,
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
from producers.ops.metrics import render_metrics
from producers.ops.report import build_report
from producers.ops.rollout import AdvisorRollout, default_actor

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
    report = health(gateway)
    if report.status == "down":
        response.status_code = 503
    return report


@router.get(
    "/metrics",
    tags=["operations"],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
               **error_responses(401, 403, 503)},
)  # fmt: skip
def get_metrics(gateway: GatewayDep, _caller: ReaderDep) -> Response:
    """Prometheus text format; queue depths are left out while the broker is unreachable."""
    settings = gateway.settings
    queues = [queue for _variant, queue in queues_of(gateway.registry)]
    broker = check_broker(gateway.broker, settings.resolved_broker_url, queues)
    body = render_metrics(gateway.engine, settings, broker.depths if broker.ok else None)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/report", tags=["operations"], responses=error_responses(401, 403, 422, 503))
def get_report(
    gateway: GatewayDep,
    _caller: ReaderDep,
    days: float = Query(default=7.0, gt=0, le=MAX_REPORT_DAYS, description="window in days"),
    advisor: str | None = Query(default=None, min_length=1, max_length=64, pattern=PRINTABLE),
) -> JSONResponse:
    """The A/B report (`advisor report --json`): outcomes, scores, Welch test, SRM checks."""
    report = build_report(gateway.engine, days=days, advisor=advisor)
    return JSONResponse(finite(report.to_dict()))


@router.get(
    "/rollouts",
    response_model=list[RolloutPublic],
    tags=["rollouts"],
    responses=error_responses(401, 503),
)
def get_rollouts(gateway: AuthorisedDep) -> list[RolloutPublic]:
    return [_public(row) for row in gateway.rollouts.show()]


def _public(row: AdvisorRollout) -> RolloutPublic:
    return rollout_public(row.weights, row.variants, row.live_variants)


def _actor(given: str | None) -> str:
    return given or f"gateway/{default_actor()}"


@router.put(
    "/rollouts/{advisor}",
    response_model=RolloutPublic,
    tags=["rollouts"],
    responses=error_responses(401, 409, 422, 503),
)
def put_rollout(advisor: AdvisorPath, body: RolloutUpdate, gateway: AuthorisedDep) -> RolloutPublic:
    """Replace an advisor's weights (normalised, versioned, audited) and its shadow share."""
    control = gateway.rollouts
    actor = _actor(body.actor)
    weights = control.set_weights(
        advisor, body.weights, reason=body.reason, actor=actor, shadow=body.shadow,
        expected_version=body.expected_version,
    )  # fmt: skip
    # An operator's split overrides an active rollout plan: it pauses (see its state).
    gateway.plans.on_manual_change(weights, actor)
    return _public(control.describe(weights))


@router.post(
    "/rollouts/{advisor}/rollback",
    response_model=RollbackPublic,
    tags=["rollouts"],
    responses=error_responses(401, 409, 422, 503),
)
def post_rollback(
    advisor: AdvisorPath, body: RollbackRequest, gateway: AuthorisedDep
) -> RollbackPublic:
    """Every non-base weight to 0; with `drain`, queued jobs move to base."""
    actor = _actor(body.actor)
    result = gateway.rollouts.rollback(
        advisor, drain=body.drain, reason=body.reason, actor=actor,
        expected_version=body.expected_version,
    )  # fmt: skip
    gateway.plans.on_manual_change(result.weights, actor)
    w = result.weights
    return RollbackPublic(
        advisor=w.advisor, weights=dict(w.weights), version=w.version,
        drained=result.drained, republished=result.republished,
    )  # fmt: skip
