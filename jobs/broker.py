"""The Celery configuration both sides share, derived from Settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from jobs.contracts import ANALYZE_TASK, queue_for
from jobs.settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """JSON only, acks late, prefetch 1, and a visibility timeout that outlasts the hard limit."""
    transport_options: dict[str, Any] = {}
    broker = settings.resolved_broker_url
    if broker.startswith(("redis", "rediss")):
        transport_options = {"visibility_timeout": settings.visibility_timeout}

    return {
        "broker_url": broker,
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


def make_celery(settings: Settings, name: str) -> Celery:
    broker = settings.resolved_broker_url
    if broker.startswith("sqla+sqlite:///"):
        # SQLite cannot create the file's directory; the embedded default must just work.
        Path(broker.removeprefix("sqla+sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app


def analyze_queue(variant: str) -> Queue:
    """A durable direct queue per variant; its routing key equals its name."""
    name = queue_for(variant)
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def beat_entry(
    key: str, task: str, interval_seconds: float, *, queue: str | None = None
) -> dict[str, Any]:
    """An `app.conf.beat_schedule` entry; a run older than one interval is dropped."""
    options: dict[str, Any] = {"expires": interval_seconds}
    if queue is not None:
        options["queue"] = queue
    return {key: {"task": task, "schedule": interval_seconds, "options": options}}
