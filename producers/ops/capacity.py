"""Capacity planning: workers each queue needs for the current split and the next rollout step."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from jobs.clock import utcnow
from jobs.contracts import BASE_VARIANT, FINE_TUNED_VARIANT, Status, queue_for, shadow_queue_for
from jobs.variants import Registry
from producers.ops.bench_file import BenchFigures
from producers.ops.memory import DEFAULT_HOST_MEMORY_GB, DEFAULT_MODEL_MEMORY_GB, WorkerMemory
from producers.rollouts import RolloutStore
from producers.router import other_arm
from store.models import Job

# The fine-tuned weight's rollout steps.
LADDER = (0.10, 0.25, 0.50, 1.0)
# Upstream measured 30-100 s per analysis on an M1 Pro; used only when a variant has no data.
DEFAULT_SERVICE_SECONDS = 60.0


@dataclass(frozen=True)
class AdvisorLoad:
    advisor: str
    jobs: int  # queued in the window, shadow jobs not counted
    rate_per_hour: float
    weights: dict[str, float]
    next_weights: dict[str, float]
    shadow: float = 0.0  # share of split jobs also run on the other arm


@dataclass(frozen=True)
class VariantCapacity:
    variant: str
    service_seconds: float  # mean inference time of one job (its latency)
    service_samples: int
    service_is_default: bool  # no succeeded job in the window and no bench: the default
    # Worker time each job costs: busy time / jobs per worker. A worker generating B jobs
    # at once overlaps them, so this is below service_seconds; the plan uses it.
    worker_seconds_per_job: float
    rate_per_hour: float  # primary and shadow jobs
    workers: int
    next_rate_per_hour: float
    next_workers: int
    memory_gb_per_worker: float
    queue_depth: int | None  # messages waiting in its queue now; None: not known
    memory_source: str = "given"  # measured, bench FILE, checkpoint, default, given (--memory-gb)
    # Where worker_seconds_per_job came from: measured (the window's jobs), bench FILE (its
    # recommended B, for a variant with no job in the window) or default.
    service_source: str = "measured"
    shadow_rate_per_hour: float = 0.0  # of rate_per_hour, shadow jobs
    next_shadow_rate_per_hour: float = 0.0
    shadow_queue_depth: int | None = None


@dataclass(frozen=True)
class CapacityPlan:
    window_hours: float
    target_utilisation: float
    advisors: tuple[AdvisorLoad, ...]
    variants: tuple[VariantCapacity, ...]
    processes: int
    memory_gb: float
    next_processes: int
    next_memory_gb: float
    host_memory_gb: float
    warnings: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return self.memory_gb <= self.host_memory_gb

    @property
    def next_fits(self) -> bool:
        return self.next_memory_gb <= self.host_memory_gb

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fits": self.fits, "next_fits": self.next_fits}


def next_weights(
    weights: Mapping[str, float], candidate: str | None, step: float | None = None
) -> dict[str, float]:
    """`candidate` at the next ladder rung (or `step`); the others share the rest pro rata."""
    current = dict(weights)
    if candidate is None:
        return current
    now = current.get(candidate, 0.0)
    target = step if step is not None else next((r for r in LADDER if r > now + 1e-9), now)
    others = {v: w for v, w in current.items() if v != candidate}
    rest = sum(others.values())
    shared = (
        {v: w / rest * (1 - target) for v, w in others.items()}
        if rest > 0
        else {BASE_VARIANT: 1 - target}
    )
    return {**shared, candidate: target}


def _loads(
    rate: float, weights: Mapping[str, float], shadow: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Jobs/h per variant of an advisor, and of those the shadow jobs (a `shadow` share of
    each arm's split jobs runs again on the other arm)."""
    total: dict[str, float] = defaultdict(float)
    shadows: dict[str, float] = defaultdict(float)
    for v, w in weights.items():
        total[v] += rate * w
        other = other_arm(dict(weights), v) if shadow > 0 and w > 0 else None
        if other is not None:
            total[other] += rate * w * shadow
            shadows[other] += rate * w * shadow
    return total, shadows


def _candidate(registry: Registry, advisor: str, weights: Mapping[str, float]) -> str | None:
    """The variant being rolled out: the heaviest non-base one, else one the registry offers."""
    weighted = [(w, v) for v, w in weights.items() if v != BASE_VARIANT and w > 0]
    if weighted:
        return max(weighted)[1]
    offered = sorted(v.name for v in registry.variants_for(advisor) if not v.is_base)
    if FINE_TUNED_VARIANT in offered:
        return FINE_TUNED_VARIANT
    return offered[0] if offered else None


def plan_capacity(
    engine: Engine,
    registry: Registry,
    rollouts: RolloutStore,
    *,
    window_hours: float,
    target_utilisation: float = 0.7,
    memory_per_worker_gb: float | Mapping[str, WorkerMemory] = DEFAULT_MODEL_MEMORY_GB,
    host_memory_gb: float = DEFAULT_HOST_MEMORY_GB,
    next_step: float | None = None,
    default_service_seconds: float = DEFAULT_SERVICE_SECONDS,
    queue_depths: Mapping[str, int] | None = None,
    benches: Mapping[str, BenchFigures] | None = None,
    now: datetime | None = None,
) -> CapacityPlan:
    """workers_v = ceil(arrivals_v * worker_seconds_per_job_v / target), at least 1 if weighted.

    worker_seconds_per_job is measured from the window's jobs (see _measured_service), so a
    queue served by B-row workers is planned at their measured rate, not B x one job's.

    `queue_depths` (queue -> messages waiting, from jobs.broker.queue_depths) is shown with
    each variant's row. `benches` (variant -> its saved `advisor-worker bench`) stands in for
    a variant with no job in the window, and for its memory unless measured or given.
    """
    if not 0 < target_utilisation <= 1:
        raise ValueError(f"target_utilisation must be in (0, 1], got {target_utilisation}")
    now = now or utcnow()
    since = now - timedelta(hours=window_hours)
    window = (Job.queued_at >= since, Job.queued_at <= now)
    with engine.connect() as conn:
        arrivals = dict(
            conn.execute(
                select(Job.advisor, func.count())
                .where(*window, Job.shadow_of.is_(None))
                .group_by(Job.advisor)
            ).all()
        )
        served = conn.execute(
            select(Job.variant, Job.worker, Job.completed_at, Job.inference_ms).where(
                *window,
                Job.status == Status.SUCCEEDED,
                Job.inference_ms.is_not(None),
                Job.completed_at.is_not(None),
            )
        ).all()
    service = _measured_service(served)
    hours = window_hours
    advisors = []
    rate_now: dict[str, float] = defaultdict(float)
    rate_next: dict[str, float] = defaultdict(float)
    shadow_now: dict[str, float] = defaultdict(float)
    shadow_next: dict[str, float] = defaultdict(float)
    for advisor in sorted(set(arrivals) | {w.advisor for w in rollouts.all()}):
        current = rollouts.get(advisor)
        weights = current.weights
        upcoming = next_weights(weights, _candidate(registry, advisor, weights), next_step)
        rate = arrivals.get(advisor, 0) / hours
        advisors.append(
            AdvisorLoad(advisor, arrivals.get(advisor, 0), rate, weights, upcoming, current.shadow)
        )
        for loads, shadows, split in ((rate_now, shadow_now, weights),
                                      (rate_next, shadow_next, upcoming)):  # fmt: skip
            total, shadowed = _loads(rate, split, current.shadow)
            for v in total:
                loads[v] += total[v]
                shadows[v] += shadowed.get(v, 0.0)
    weighted_now = {v for v, r in rate_now.items() if r > 0} | {
        v for a in advisors for v, w in a.weights.items() if w > 0
    }
    weighted_next = {v for v, r in rate_next.items() if r > 0} | {
        v for a in advisors for v, w in a.next_weights.items() if w > 0
    }
    variants, warnings = [], []
    for v in sorted(weighted_now | weighted_next, key=lambda v: (v != BASE_VARIANT, v)):
        bench = (benches or {}).get(v)
        seconds, per_job, samples = service.get(
            v, (default_service_seconds, default_service_seconds, 0)
        )
        source = "measured" if samples else "default"
        if not samples and bench is not None:
            seconds, per_job = bench.p50_seconds, bench.worker_seconds_per_job
            source = f"bench {bench.path}"
            warnings.append(
                f"{v}: no succeeded job in the last {window_hours:g}h; planned from {bench.path} "
                f"(B={bench.batch}: {bench.jobs_per_hour:g} jobs/h = {per_job:.1f}s per job, "
                f"{bench.host}, {bench.date})"
            )
        elif not samples:
            warnings.append(
                f"{v}: no succeeded job in the last {window_hours:g}h; "
                f"assumed {default_service_seconds:g}s per job"
            )
        memory = (
            memory_per_worker_gb.get(v, WorkerMemory(DEFAULT_MODEL_MEMORY_GB, "default"))
            if isinstance(memory_per_worker_gb, Mapping)
            else WorkerMemory(memory_per_worker_gb, "given")
        )
        if bench is not None and memory.source in ("default", "checkpoint"):
            memory = WorkerMemory(bench.peak_memory_mb * 2**20 / 1e9, f"bench {bench.path}")
        variants.append(
            VariantCapacity(
                variant=v,
                service_seconds=seconds,
                service_samples=samples,
                service_is_default=source == "default",
                service_source=source,
                worker_seconds_per_job=per_job,
                rate_per_hour=rate_now[v],
                workers=_workers(rate_now[v], per_job, target_utilisation, v in weighted_now),
                next_rate_per_hour=rate_next[v],
                next_workers=_workers(
                    rate_next[v], per_job, target_utilisation, v in weighted_next
                ),
                memory_gb_per_worker=memory.gb,
                memory_source=memory.source,
                queue_depth=(queue_depths or {}).get(queue_for(v)),
                shadow_rate_per_hour=shadow_now[v],
                next_shadow_rate_per_hour=shadow_next[v],
                shadow_queue_depth=(queue_depths or {}).get(shadow_queue_for(v)),
            )
        )
    processes = sum(v.workers for v in variants)
    next_processes = sum(v.next_workers for v in variants)
    memory_gb = sum(v.workers * v.memory_gb_per_worker for v in variants)
    next_memory_gb = sum(v.next_workers * v.memory_gb_per_worker for v in variants)
    for label, procs, gb in (
        ("now", processes, memory_gb),
        ("next step", next_processes, next_memory_gb),
    ):
        if gb > host_memory_gb:
            warnings.append(
                f"{label}: {procs} worker processes need {gb:.1f} GB (one model each) "
                f"but the host budget is {host_memory_gb:g} GB; add a host or lower the split"
            )
    return CapacityPlan(
        window_hours, target_utilisation, tuple(advisors), tuple(variants), processes, memory_gb,
        next_processes, next_memory_gb, host_memory_gb, tuple(warnings),
    )  # fmt: skip


def _measured_service(rows: Any) -> dict[str, tuple[float, float, int]]:
    """variant -> (mean inference s, worker s per job, jobs), from (variant, worker, end, ms).

    Each job kept its worker busy over [completed_at - inference, completed_at]; a worker's
    busy time is the union of its jobs' intervals, so B jobs generated at once count once.
    The worker seconds per job is the measured per-worker rate at whatever B served them.
    """
    spans: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for variant, worker, completed, ms in rows:
        end = completed.timestamp()
        spans[variant][str(worker)].append((end - ms / 1000, end))
    measured = {}
    for variant, by_worker in spans.items():
        jobs = sum(len(s) for s in by_worker.values())
        busy = sum(_union_seconds(s) for s in by_worker.values())
        mean = sum(e - b for s in by_worker.values() for b, e in s) / jobs
        measured[variant] = (mean, busy / jobs, jobs)
    return measured


def _union_seconds(spans: list[tuple[float, float]]) -> float:
    total, reach = 0.0, float("-inf")
    for begin, end in sorted(spans):
        if end > reach:
            total += end - max(begin, reach)
            reach = end
    return total


def _workers(rate_per_hour: float, service_seconds: float, target: float, weighted: bool) -> int:
    needed = math.ceil(rate_per_hour / 3600 * service_seconds / target - 1e-9)
    return max(needed, 1 if weighted else 0)


def render_plan(plan: CapacityPlan) -> str:
    lines = [
        f"Capacity at {plan.target_utilisation:.0%} target utilisation "
        f"(arrivals over the last {plan.window_hours:g}h)",
        "",
    ]
    for a in plan.advisors:
        now = " ".join(f"{v} {w:.2f}" for v, w in a.weights.items())
        upcoming = " ".join(f"{v} {w:.2f}" for v, w in a.next_weights.items())
        shadow = f"  shadow {a.shadow:.2f}" if a.shadow else ""
        lines.append(
            f"  {a.advisor:<12}{a.rate_per_hour:8.1f} jobs/h  split {now}  next {upcoming}{shadow}"
        )
    lines += [
        "",
        f"{'queue':<22}{'waiting':>8}{'shadow':>7}{'service s':>10}{'worker s':>9}{'jobs/h':>9}"
        f"{'of which shadow':>16}{'workers':>9}{'next jobs/h':>13}{'next':>6}",
    ]
    for v in plan.variants:
        mark = "" if v.service_source == "measured" else "*" if v.service_is_default else "b"
        service = f"{v.service_seconds:.1f}{mark}"
        waiting = "?" if v.queue_depth is None else str(v.queue_depth)
        shadows = "?" if v.shadow_queue_depth is None else str(v.shadow_queue_depth)
        lines.append(
            f"{queue_for(v.variant):<22}{waiting:>8}{shadows:>7}{service:>10}"
            f"{v.worker_seconds_per_job:>9.1f}{v.rate_per_hour:>9.1f}"
            f"{v.shadow_rate_per_hour:>16.1f}{v.workers:>9}"
            f"{v.next_rate_per_hour:>13.1f}{v.next_workers:>6}"
        )
    lines += [
        "",
        f"Memory: now {plan.processes} processes = {plan.memory_gb:.1f} GB, next step "
        f"{plan.next_processes} = {plan.next_memory_gb:.1f} GB; "
        f"host budget {plan.host_memory_gb:g} GB",
        "Per worker: "
        + ", ".join(
            f"{v.variant} {v.memory_gb_per_worker:.2f} GB ({v.memory_source})"
            for v in plan.variants
        ),
    ]
    lines.append(
        "service s: one job's inference time; worker s: the worker time a job costs, measured "
        "(jobs generated at once share it), which the plan uses; * assumed default, "
        "b from a saved `advisor-worker bench` (--bench) at its recommended B"
    )
    if any(v.shadow_rate_per_hour for v in plan.variants):
        lines.append(
            "Shadow jobs only use idle time (a worker takes them when its own queue is empty); "
            "workers above count them, so pairs keep up."
        )
    lines += [f"WARNING: {w}" for w in plan.warnings]
    return "\n".join(lines)
