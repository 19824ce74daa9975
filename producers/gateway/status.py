"""Dependency checks and per-queue numbers, shared by /health, /metrics and the dashboard."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from celery import Celery
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from jobs.broker import queue_depths
from jobs.contracts import BASE_VARIANT, queue_for
from jobs.errors import BrokerUnreachable, summary
from jobs.variants import Registry
from producers.gateway.schemas import DependencyHealth, HealthReport, QueueHealth
from producers.gateway.service import Gateway
from store.db import is_unmigrated
from store.models import Job

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerState:
    ok: bool
    detail: str
    depths: dict[str, int]  # queue -> messages waiting


def check_database(engine: Engine) -> DependencyHealth:
    """Connects and reads the jobs table, so an unmigrated database is reported too.

    The detail names the kind of failure only: /health is public, driver text (SQL, hosts)
    goes to the log.
    """
    try:
        with engine.connect() as conn:
            conn.execute(select(Job.id).limit(1)).first()
    except SQLAlchemyError as exc:
        return DependencyHealth(ok=False, detail=_database_failure(exc))
    return DependencyHealth(ok=True, detail=engine.dialect.name)


def _database_failure(exc: SQLAlchemyError) -> str:
    logger.warning("health: database check failed: %s", summary(exc, typed=True, limit=500))
    return "not migrated" if is_unmigrated(exc) else "unreachable"


def check_broker(app: Celery, broker_url: str, queues: list[str]) -> BrokerState:
    """Each queue's depth (absent queue: 0), or that the broker did not answer (logged why)."""
    try:
        depths = queue_depths(app, queues)
    except BrokerUnreachable as exc:
        logger.warning("health: %s", exc)
        return BrokerState(False, "unreachable", {})
    return BrokerState(True, broker_kind(broker_url), depths)


def broker_kind(url: str) -> str:
    """The transport alone (redis, amqp, sqla+sqlite...): never a host, user or password."""
    return url.split("://", 1)[0]


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
            database = DependencyHealth(ok=False, detail=_database_failure(exc))
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
