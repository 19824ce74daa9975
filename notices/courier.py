"""Sending the outbox: completion tasks and signed webhooks for finished jobs, retried with backoff.

Shared by the worker (right after it records an outcome, off the MLX and message threads)
and the sweep (whatever is due: retries, and notices a dead worker never sent). Delivery
is at least once: a sender that dies after sending but before recording is repeated, and
receivers dedupe on the delivery id (the task id, or X-Advisor-Delivery) or the job id.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kombu import Exchange, Queue

from jobs.broker import SEND_RETRY_POLICY, make_celery, send_errors, unreachable
from jobs.clock import utcnow
from jobs.contracts import (
    NOTIFY_QUEUE_PREFIX,
    DeliveryKind,
    Status,
    is_notify_queue,
    is_notify_task_name,
)
from jobs.errors import summary
from jobs.incidents import IncidentKind, incident
from jobs.settings import Settings
from notices.webhooks import CallbackPolicy, PostResult, WebhookSender
from store.deliveries import DeliveryStore, backoff_seconds
from store.models import Delivery, Job

logger = logging.getLogger(__name__)

NOTICE_VERSION = 1
# Receivers served side by side in one round; each attempt has its own deadline.
RECEIVERS_AT_ONCE = 8
REFUSED_NAME = (
    f"the task or queue name is outside the client namespace ({NOTIFY_QUEUE_PREFIX}NAME); "
    "submit again with a valid notify_queue"
)


def notice_for(job: Job) -> dict[str, Any]:
    """What a completion task carries and a webhook POSTs: the outcome of one final job."""
    notice: dict[str, Any] = {
        "version": NOTICE_VERSION,
        "job_id": job.id,
        "status": job.status,
        "advisor": job.advisor,
        "variant": job.variant,
        "model_used": job.model_used,
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
    }
    if job.status == Status.SUCCEEDED:
        notice["analysis"] = job.llm_outputs
    else:
        notice["error_kind"] = job.error_kind
        notice["error"] = job.error
    return notice


def notice_body(job: Job) -> bytes:
    """The webhook body; a final row never changes, so every retry sends the same bytes."""
    return json.dumps(notice_for(job), sort_keys=True, separators=(",", ":")).encode()


def receiver_of(delivery: Delivery) -> str:
    """Who answers a notice: the callback's host and port, or the notify broker for tasks."""
    if delivery.kind == DeliveryKind.TASK:
        return "task"
    try:
        parts = urlsplit(delivery.target)
        return f"webhook:{(parts.hostname or '').lower()}:{parts.port}"
    except ValueError:
        return "webhook:?"  # refused when sent; grouped with other unreadable targets meanwhile


def policy_of(settings: Settings) -> CallbackPolicy:
    return CallbackPolicy(tuple(settings.webhook_allowed_hosts))


class TaskSender:
    """Publishes completion tasks on ADVISOR_NOTIFY_BROKER_URL (JSON only, like every message)."""

    def __init__(self, settings: Settings) -> None:
        url = settings.resolved_notify_broker_url
        self.url = url
        self.app = make_celery(settings.model_copy(update={"broker_url": url}), "advisor-notices")
        self._errors = send_errors(self.app)

    def send(self, task: str, queue: str, notice: dict[str, Any], task_id: str) -> PostResult:
        # Checked again here: a row written around the producers must not reach broker keys.
        if not is_notify_task_name(task) or not is_notify_queue(queue):
            return PostResult(False, error=REFUSED_NAME, permanent=True)
        try:
            self.app.send_task(
                task, args=[notice], task_id=task_id,
                queue=Queue(queue, Exchange(queue, type="direct"), routing_key=queue),
                routing_key=queue, retry=True, retry_policy=SEND_RETRY_POLICY,
            )  # fmt: skip
        except self._errors as exc:
            # The broker's address (and any password in it) is for the operator only.
            found = incident(exc, f"completion task {task_id}", kind=IncidentKind.BROKER)
            return PostResult(False, error=found.text, detail=unreachable(self.url, exc))
        return PostResult(True)

    def close(self) -> None:
        self.app.close()


@dataclass
class DeliveryRound:
    """Delivery ids by what one round did with them."""

    delivered: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)

    def add(self, other: DeliveryRound) -> None:
        self.delivered += other.delivered
        self.retrying += other.retrying
        self.undelivered += other.undelivered

    @property
    def sent(self) -> int:
        return len(self.delivered) + len(self.retrying) + len(self.undelivered)


class Courier:
    """Claims due deliveries, sends each once and records the attempt."""

    def __init__(
        self,
        settings: Settings,
        store: DeliveryStore,
        *,
        sender: str,
        webhooks: WebhookSender | None = None,
        tasks: TaskSender | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sender = sender
        secret = settings.webhook_secret
        self.webhooks = webhooks or WebhookSender(
            policy_of(settings),
            secret.get_secret_value().encode() if secret is not None else None,
            timeout=settings.webhook_timeout,
        )
        self.tasks = tasks or TaskSender(settings)

    @property
    def lease_seconds(self) -> float:
        # Connect, send and read the status line each get a time-out; then some margin.
        return 4 * self.settings.webhook_timeout + 10

    def deliver_job(self, job_id: str) -> DeliveryRound:
        """The job's due notices: what a worker calls once the outcome is committed."""
        claimed = self.store.claim_due(lease_seconds=self.lease_seconds, job_id=job_id)
        return self._deliver(claimed, self.sender)

    def deliver_due(self, limit: int = 100, *, by: str | None = None) -> DeliveryRound:
        """Every due notice (first sends a dead worker left, and retries): the sweep's step.
        `by` names the sender in the attempt log (default: this courier's)."""
        claimed = self.store.claim_due(lease_seconds=self.lease_seconds, limit=limit)
        return self._deliver(claimed, by or self.sender)

    def _deliver(self, claimed: list[tuple[Delivery, Job]], by: str) -> DeliveryRound:
        """Each receiver's notices in order, receivers side by side: a slow one holds its own
        notices only (each attempt within its deadline), never another receiver's."""
        groups: dict[str, list[tuple[Delivery, Job]]] = {}
        for delivery, job in claimed:
            groups.setdefault(receiver_of(delivery), []).append((delivery, job))
        done = DeliveryRound()
        if len(groups) <= 1:
            for group in groups.values():
                done.add(self._deliver_in_order(group, by))
            return done
        with ThreadPoolExecutor(
            max_workers=min(len(groups), RECEIVERS_AT_ONCE), thread_name_prefix="notices"
        ) as pool:
            for result in pool.map(lambda g: self._deliver_in_order(g, by), groups.values()):
                done.add(result)
        return done

    def _deliver_in_order(self, claimed: list[tuple[Delivery, Job]], by: str) -> DeliveryRound:
        done = DeliveryRound()
        for delivery, job in claimed:
            started = time.perf_counter()
            try:
                result = self._send(delivery, job)
            except Exception as exc:  # noqa: BLE001 - no notice may stop its sender; recorded failed
                found = incident(exc, f"delivery {delivery.id} of job {job.id}", log=logger)
                result = PostResult(False, error=found.text, detail=summary(exc, typed=True))
            attempt = {
                "at": utcnow().isoformat(), "by": by, "ok": result.ok,
                "status_code": result.status_code, "error": result.error,
                "ms": int((time.perf_counter() - started) * 1000),
            }  # fmt: skip
            if result.detail is not None:
                attempt["detail"] = result.detail  # the operator's; tenants' views drop it
            number = delivery.attempts + 1
            give_up = not result.ok and (
                result.permanent or number >= self.settings.delivery_max_attempts
            )
            wait = backoff_seconds(number, self.settings.delivery_backoff_seconds)
            if not self.store.record(
                delivery, attempt, delivered=result.ok, give_up=give_up, retry_in=wait
            ):
                logger.warning("Delivery %s of job %s: the claim lapsed before the attempt was "
                               "recorded; it may be sent again", delivery.id, job.id)  # fmt: skip
                continue
            if result.ok:
                done.delivered.append(delivery.id)
                logger.info("Delivered %s %s of job %s (%s)", delivery.kind, delivery.id, job.id,
                            job.status)  # fmt: skip
            elif give_up:
                done.undelivered.append(delivery.id)
                logger.warning("Delivery %s of job %s is undelivered after %d attempt(s): %s",
                               delivery.id, job.id, number, result.error)  # fmt: skip
            else:
                done.retrying.append(delivery.id)
                logger.warning("Delivery %s of job %s failed (%s); retry in %.0fs",
                               delivery.id, job.id, result.error, wait)  # fmt: skip
        return done

    def _send(self, delivery: Delivery, job: Job) -> PostResult:
        if delivery.kind == DeliveryKind.TASK:
            return self.tasks.send(delivery.target, delivery.queue or "", notice_for(job),
                                   delivery.id)  # fmt: skip
        return self.webhooks.post(delivery.target, notice_body(job), delivery.id)

    def close(self) -> None:
        self.tasks.close()
