"""The Celery configuration both sides share, derived from Settings, and the queue depths."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Connection, Exchange, Queue
from kombu.exceptions import KombuError
from kombu.transport import sqlalchemy as sqla_transport
from sqlalchemy.exc import IntegrityError

from jobs.contracts import ANALYZE_TASK, queue_for, queue_of
from jobs.errors import BrokerUnreachable, summary
from jobs.settings import Settings, mask_url

logger = logging.getLogger(__name__)

# A probe must answer quickly even when the broker host is black-holed.
PROBE_TIMEOUT_SECONDS = 3.0


def is_redis(url: str) -> bool:
    return url.startswith(("redis", "rediss"))


def celery_config(settings: Settings) -> dict[str, Any]:
    """JSON only, acks late, prefetch 1, and a visibility timeout that outlasts the hard limit."""
    transport_options: dict[str, Any] = {}
    broker = settings.resolved_broker_url
    if is_redis(broker):
        # `priority`: BRPOP lists a worker's queues in its -Q order, its own queue before its
        # shadow queue, so shadow work is taken only when the main queue is empty.
        transport_options = {
            "visibility_timeout": settings.visibility_timeout,
            "queue_order_strategy": "priority",
        }

    return {
        "broker_url": broker,
        "broker_use_ssl": broker_tls(settings),
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": settings.soft_time_limit,
        "task_default_queue": queue_for("base"),
        "task_create_missing_queues": True,
        "task_routes": {ANALYZE_TASK: {"queue": queue_for("base")}},
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "broker_pool_limit": 4,
    }


def _safe_get_or_create(channel: Any, queue: str) -> Any:
    """kombu's sqla queue lookup, safe when several processes create the same queue at once.

    kombu guards the select-then-insert with a thread lock only; two processes (a worker
    declaring its queues while a producer publishes to one) can both insert, and the loser's
    IntegrityError used to escape into the publish or the consumer.
    """
    try:
        return _kombu_get_or_create(channel, queue)
    except IntegrityError:
        channel.session.rollback()
        return channel.session.query(channel.queue_cls).filter_by(name=queue).one()


_kombu_get_or_create = sqla_transport.Channel._get_or_create
sqla_transport.Channel._get_or_create = _safe_get_or_create  # type: ignore[method-assign]


def broker_tls(settings: Settings) -> dict[str, Any] | None:
    """TLS options for rediss:// and amqps://: the server's certificate is always verified.

    kombu's Redis transport only switches to TLS when given these as a dict.
    """
    url = settings.resolved_broker_url
    ca = str(settings.broker_ca_file) if settings.broker_ca_file else None
    if url.startswith("rediss://"):
        return {"ssl_cert_reqs": ssl.CERT_REQUIRED, **({"ssl_ca_certs": ca} if ca else {})}
    if url.startswith("amqps://"):
        return {"cert_reqs": ssl.CERT_REQUIRED, **({"ca_certs": ca} if ca else {})}
    return None


def make_celery(settings: Settings, name: str) -> Celery:
    broker = settings.resolved_broker_url
    if broker.startswith("sqla+sqlite:///"):
        # SQLite cannot create the file's directory; the embedded default must just work.
        Path(broker.removeprefix("sqla+sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app


def analyze_queue(variant: str, *, is_shadow: bool = False) -> Queue:
    """A durable direct queue per variant (and one for its shadow jobs); routing key = name."""
    name = queue_of(variant, is_shadow=is_shadow)
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def beat_entry(
    key: str, task: str, interval_seconds: float, *, queue: str | None = None
) -> dict[str, Any]:
    """An `app.conf.beat_schedule` entry; a run older than one interval is dropped."""
    options: dict[str, Any] = {"expires": interval_seconds}
    if queue is not None:
        options["queue"] = queue
    return {key: {"task": task, "schedule": interval_seconds, "options": options}}


# A dead broker must fail a submit or a notice in seconds, not hang it: ~1.7 s of retries.
SEND_RETRY_POLICY = {
    "max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0,
}  # fmt: skip


def send_errors(app: Celery) -> tuple[type[BaseException], ...]:
    """What a failed send can raise: the transport's own types too (redis-py's are not
    OSErrors), learnt from a connection that is never opened."""
    probe = app.connection_for_write()
    try:
        return (KombuError, OSError, *probe.connection_errors, *probe.channel_errors)
    finally:
        probe.release()


def unreachable(url: str, exc: BaseException) -> str:
    """The reason a broker call failed, naming the broker (password masked)."""
    return f"broker {mask_url(url)} unreachable ({summary(exc, typed=True)})"


def queue_depths(
    app: Celery, queues: Iterable[str], *, timeout: float = PROBE_TIMEOUT_SECONDS
) -> dict[str, int]:
    """Messages ready in each queue, by a passive declare; a queue never declared reads 0.

    Redis counts every priority list of a queue (kombu's `_size` sums them). Raises
    BrokerUnreachable when the broker does not answer within about `timeout` seconds;
    callers that can go on without depths catch it. Every channel and connection opened
    here is closed, on every transport.
    """
    names = list(dict.fromkeys(queues))
    url = str(app.conf.broker_url)
    # Redis reads its socket timeouts from the transport options; AMQP from connect_timeout.
    options = (
        {"socket_connect_timeout": timeout, "socket_timeout": timeout} if is_redis(url) else {}
    )
    conn = app.connection_for_read(connect_timeout=timeout, transport_options=options)
    try:
        errors = (KombuError, OSError, *conn.connection_errors)
        try:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, interval_max=0, timeout=timeout
            )
            return {queue: _depth(conn, queue) for queue in names}
        except errors as exc:
            raise BrokerUnreachable(unreachable(url, exc)) from exc
    finally:
        conn.release()


def _depth(conn: Connection, queue: str) -> int:
    channel = conn.channel()
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except conn.channel_errors:
        return 0  # never declared, or gone with a broker restart: nothing waits in it
    finally:
        # kombu's SQLAlchemy channel keeps its ORM session, and so a pooled connection, past
        # close(); without this every probe leaks one connection per queue.
        session = getattr(channel, "_session", None)
        if session is not None:
            session.close()
        try:
            channel.close()
        except (*conn.connection_errors, *conn.channel_errors):
            # A failed passive declare closes AMQP channels itself.
            logger.debug("channel for %s already closed", queue)
