"""Dependency checks and per-queue numbers, shared by /health, /metrics and the dashboard."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from celery import Celery
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from jobs.broker import queue_depths
from jobs.contracts import BASE_VARIANT, queue_for
from jobs.errors import BrokerUnreachable, summary
from jobs.models import Job
from jobs.settings import mask_url
from jobs.variants import Registry
from producers.gateway.schemas import DependencyHealth, HealthReport, QueueHealth
from producers.gateway.service import Gateway


@dataclass(frozen=True)
class BrokerState:
    ok: bool
    detail: str
    depths: dict[str, int]  # queue -> messages waiting


def check_database(engine: Engine) -> DependencyHealth:
    """Connects and reads the jobs table, so an unmigrated database is reported too."""
    try:
        with engine.connect() as conn:
            conn.execute(select(func.count()).select_from(Job)).scalar_one()
    except SQLAlchemyError as exc:
        return DependencyHealth(ok=False, detail=summary(exc, typed=True))
    return DependencyHealth(ok=True, detail=engine.dialect.name)


def check_broker(app: Celery, broker_url: str, queues: list[str]) -> BrokerState:
    """Each queue's depth (absent queue: 0), or why the broker did not answer."""
    try:
        depths = queue_depths(app, queues)
    except BrokerUnreachable as exc:
        return BrokerState(False, str(exc), {})
    return BrokerState(True, mask_url(broker_url), depths)


def queues_of(registry: Registry) -> list[tuple[str, str]]:
    """(variant, queue) for every registered variant, base first."""
    names = sorted(registry.names, key=lambda v: (v != BASE_VARIANT, v))
    return [(name, queue_for(name)) for name in names]


def health(gateway: Gateway) -> HealthReport:
    settings = gateway.settings
    database = check_database(gateway.engine)
    pairs = queues_of(gateway.registry)
    broker = check_broker(gateway.broker, settings.resolved_broker_url, [q for _v, q in pairs])
    live: Counter[str] | None = None
    slots: Counter[str] = Counter()
    busy: Counter[str] = Counter()
    if database.ok:
        try:
            workers = gateway.repository.live_workers(settings.worker_live_window)
            live = Counter(w.variant for w in workers)
            for w in workers:
                slots[w.variant] += w.slots or 1  # rows from before batching: one at a time
                busy[w.variant] += w.slots_in_use or 0
        except SQLAlchemyError as exc:
            database = DependencyHealth(ok=False, detail=summary(exc, typed=True, limit=300))
    queues = [
        QueueHealth(
            queue=queue,
            variant=variant,
            live_workers=live[variant] if live is not None else None,
            depth=broker.depths.get(queue),
            slots=slots[variant] if live is not None else None,
            slots_in_use=busy[variant] if live is not None else None,
        )  # fmt: skip
        for variant, queue in pairs
    ]
    status: Literal["ok", "degraded", "down"]
    if not (database.ok and broker.ok):
        status = "down"
    elif live is not None and live[BASE_VARIANT] == 0:
        status = "degraded"  # nothing serves the base queue; jobs wait
    else:
        status = "ok"
    return HealthReport(
        status=status,
        database=database,
        broker=DependencyHealth(ok=broker.ok, detail=broker.detail),
        queues=queues,
    )
