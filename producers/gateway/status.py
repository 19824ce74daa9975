"""Dependency checks and per-queue numbers, shared by /health, /metrics and the dashboard."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from celery import Celery
from kombu.exceptions import KombuError
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from jobs.contracts import BASE_VARIANT, queue_for
from jobs.errors import summary
from jobs.models import Job
from jobs.settings import mask_url
from producers.client import Client
from producers.gateway.schemas import DependencyHealth, HealthReport, QueueHealth

logger = logging.getLogger(__name__)

# A health check must answer quickly even when the broker host is black-holed.
BROKER_TIMEOUT_SECONDS = 3.0


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
    """Connects, then asks for each queue's depth with a passive declare (absent queue: 0)."""
    try:
        with app.connection_for_read() as conn:
            errors = (KombuError, OSError, *conn.connection_errors)
            try:
                conn.ensure_connection(
                    max_retries=1, interval_start=0, interval_step=0, interval_max=0,
                    timeout=BROKER_TIMEOUT_SECONDS,
                )  # fmt: skip
                depths = {queue: _depth(conn, queue) for queue in queues}
            except errors as exc:
                return BrokerState(False, _unreachable(broker_url, exc), {})
    except (KombuError, OSError) as exc:
        return BrokerState(False, _unreachable(broker_url, exc), {})
    return BrokerState(True, mask_url(broker_url), depths)


def _unreachable(url: str, exc: BaseException) -> str:
    return f"{mask_url(url)} unreachable ({type(exc).__name__}: {exc})"


def _depth(conn: object, queue: str) -> int:
    channel = conn.channel()  # type: ignore[attr-defined]
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except conn.channel_errors:  # type: ignore[attr-defined]
        return 0  # never declared: nothing waits in it
    finally:
        # kombu's SQLAlchemy channel keeps its ORM session, and so a pooled connection, past
        # close(); without this every health check leaks one connection per queue.
        session = getattr(channel, "_session", None)
        if session is not None:
            session.close()
        try:
            channel.close()
        except conn.channel_errors:  # type: ignore[attr-defined]
            # A failed passive declare closes AMQP channels itself.
            logger.debug("channel for %s already closed", queue)


def queues_of(client: Client) -> list[tuple[str, str]]:
    """(variant, queue) for every registered variant, base first."""
    names = sorted(client.registry.names, key=lambda v: (v != BASE_VARIANT, v))
    return [(name, queue_for(name)) for name in names]


def health(client: Client, broker_app: Celery) -> HealthReport:
    database = check_database(client.engine)
    pairs = queues_of(client)
    broker = check_broker(broker_app, client.settings.resolved_broker_url, [q for _v, q in pairs])
    live: Counter[str] | None = None
    if database.ok:
        try:
            workers = client.repository.live_workers(client.settings.worker_live_window)
            live = Counter(w.variant for w in workers)
        except SQLAlchemyError as exc:
            database = DependencyHealth(ok=False, detail=summary(exc, typed=True, limit=300))
    queues = [
        QueueHealth(
            queue=queue,
            variant=variant,
            live_workers=live[variant] if live is not None else None,
            depth=broker.depths.get(queue),
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
