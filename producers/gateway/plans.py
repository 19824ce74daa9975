"""Rollout plans over HTTP, behind the operator token: /rollouts/{advisor}/plan[/action]."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from producers.gateway.schemas import PRINTABLE, AdvisorPath, error_responses
from producers.gateway.service import AuthorisedDep
from producers.ops.plan_gate import DEFAULT_MARGIN, DEFAULT_MIN_JOBS, DEFAULT_MIN_MINUTES
from producers.ops.rollout import default_actor
from producers.plans import Plan

router = APIRouter()
Percent = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]
MAX_MIN_JOBS = 10_000_000
MAX_MIN_MINUTES = 60 * 24 * 366  # a year
MAX_MARGIN = 1e6


class PlanRequest(BaseModel):
    """POST /rollouts/{advisor}/plan: the candidate's steps (percent, increasing) and gates."""

    model_config = ConfigDict(extra="forbid")

    variant: str = Field(min_length=1, max_length=63, pattern=PRINTABLE, examples=["fine_tuned"])
    steps: list[Percent] = Field(min_length=1, max_length=50, examples=[[5, 25, 50, 100]])
    # Bounded so every value fits its column and the arithmetic on it stays finite.
    min_jobs: int = Field(default=DEFAULT_MIN_JOBS, ge=1, le=MAX_MIN_JOBS)
    min_minutes: float = Field(
        default=DEFAULT_MIN_MINUTES, ge=0, le=MAX_MIN_MINUTES, allow_inf_nan=False
    )
    margin: float = Field(
        default=DEFAULT_MARGIN, ge=0, le=MAX_MARGIN, allow_inf_nan=False,
        description="how far below base the primary metric's interval may reach (its units)",
    )  # fmt: skip
    reason: str = Field(min_length=1, max_length=2000, pattern=PRINTABLE)
    actor: str | None = Field(default=None, min_length=1, max_length=120, pattern=PRINTABLE)


class PlanAction(BaseModel):
    """POST .../plan/pause|resume|abort: why (required to abort) and who."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, min_length=1, max_length=2000, pattern=PRINTABLE)
    actor: str | None = Field(default=None, min_length=1, max_length=120, pattern=PRINTABLE)


class PlanPublic(BaseModel):
    id: int
    advisor: str
    variant: str
    steps: list[float]
    step: int = Field(description="index into steps of the applied one")
    percent: float = Field(description="the candidate's share now, percent")
    next_percent: float | None
    status: str = Field(description="active, paused, completed, rolled_back or aborted")
    state: str = Field(description="why it holds, paused or ended")
    min_jobs: int
    min_minutes: float
    margin: float
    version: int
    weights_version: int
    step_started_at: str
    details: dict[str, Any] = Field(description="the last check's statistics, workers needed")
    created_at: str
    created_by: str
    reason: str
    updated_at: str


def public(plan: Plan) -> PlanPublic:
    return PlanPublic(**plan.to_dict())


def _actor(given: str | None) -> str:
    return given or f"gateway/{default_actor()}"


RESPONSES = error_responses(401, 404, 409, 422, 503)


@router.post("/rollouts/{advisor}/plan", response_model=PlanPublic, tags=["rollouts"],
             status_code=201, responses=RESPONSES)  # fmt: skip
def post_plan(advisor: AdvisorPath, body: PlanRequest, gateway: AuthorisedDep) -> PlanPublic:
    """Start a plan: its first step is applied now; the guard loop takes the next ones."""
    plan = gateway.plans.create(
        advisor, body.variant, body.steps, reason=body.reason, actor=_actor(body.actor),
        min_jobs=body.min_jobs, min_minutes=body.min_minutes, margin=body.margin,
    )  # fmt: skip
    return public(plan)


@router.get("/rollouts/{advisor}/plan", response_model=PlanPublic, tags=["rollouts"],
            responses=RESPONSES)  # fmt: skip
def get_plan(advisor: AdvisorPath, gateway: AuthorisedDep) -> PlanPublic:
    """The open plan, else the most recent one that ended."""
    return public(gateway.plans.show(advisor))


@router.post("/rollouts/{advisor}/plan/pause", response_model=PlanPublic, tags=["rollouts"],
             responses=RESPONSES)  # fmt: skip
def pause_plan(advisor: AdvisorPath, body: PlanAction, gateway: AuthorisedDep) -> PlanPublic:
    return public(gateway.plans.pause(advisor, reason=body.reason or "paused by operator",
                                      actor=_actor(body.actor)))  # fmt: skip


@router.post("/rollouts/{advisor}/plan/resume", response_model=PlanPublic, tags=["rollouts"],
             responses=RESPONSES)  # fmt: skip
def resume_plan(advisor: AdvisorPath, body: PlanAction, gateway: AuthorisedDep) -> PlanPublic:
    """Active again at the current step; its weights are applied anew, its job count restarts."""
    return public(gateway.plans.resume(advisor, reason=body.reason or "resumed by operator",
                                       actor=_actor(body.actor)))  # fmt: skip


@router.post("/rollouts/{advisor}/plan/abort", response_model=PlanPublic, tags=["rollouts"],
             responses=RESPONSES)  # fmt: skip
def abort_plan(advisor: AdvisorPath, body: PlanAction, gateway: AuthorisedDep) -> PlanPublic:
    """The candidate to 0 (like a rollback, with the reason); the plan ends."""
    return public(gateway.plans.abort(advisor, reason=body.reason or "",
                                      actor=_actor(body.actor)))  # fmt: skip
