"""Publishing analyze messages: one connection, pipelined batches, a bounded retry, fail fast."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jobs.broker import (
    SEND_RETRY_POLICY,
    analyze_queue,
    is_redis,
    make_celery,
    send_errors,
    unreachable,
)
from jobs.contracts import ANALYZE_TASK, AnalyzeRequest, queue_of
from jobs.settings import Settings
from store.models import Job

logger = logging.getLogger(__name__)

# Redis: bound connect and reads so a black-holed broker host fails fast as well.
REDIS_SOCKET_OPTIONS = {"socket_connect_timeout": 3.0, "socket_timeout": 10.0}
# Jobs per broker batch, and its buffer (task message + task-sent event each, with room).
BATCH_JOBS = 200
BATCH_OPERATIONS = 4 * BATCH_JOBS


@dataclass
class PublishResult:
    sent: list[str] = field(default_factory=list)
    unsent: list[str] = field(default_factory=list)
    error: str | None = None


def request_for(job: Job) -> AnalyzeRequest:
    """The message body names the job and its variant; the worker reads the rest from the row."""
    return AnalyzeRequest(job_id=job.id, variant=job.variant)


class Publisher:
    """Sends `advisor.analyze` to each job's variant queue over the producer's Celery app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = make_celery(settings, "advisor-producer")
        if is_redis(settings.resolved_broker_url):
            self.app.conf.broker_transport_options = {
                **self.app.conf.broker_transport_options,
                **REDIS_SOCKET_OPTIONS,
            }
        self._errors = send_errors(self.app)
        self._delivery_mode = self.app.conf.task_default_delivery_mode

    def send(self, jobs: Sequence[Job]) -> PublishResult:
        """Send each job once; after the first failure the rest are left for the republisher.

        The broker half of Outbox.publish, which records the outcome on the rows: publish
        through that, never this alone."""
        result = PublishResult()
        if not jobs:
            return result
        started = time.perf_counter()
        try:
            with self.app.producer_or_acquire() as producer:
                self._declare(producer, jobs)
                is_batched = producer.supports_batch_publish
                for first in range(0, len(jobs), BATCH_JOBS):
                    chunk, done = jobs[first : first + BATCH_JOBS], 0
                    try:
                        # Redis: one pipelined round trip per chunk; other transports send
                        # each at once.
                        with producer.batch(max_size=BATCH_OPERATIONS):
                            for job in chunk:
                                self._send(job, producer, retry=not is_batched)
                                done += 1
                    except self._errors as exc:
                        # A failed pipeline's delivery is uncertain: its whole chunk counts as
                        # unsent, and a resend is harmless (the worker's start is guarded).
                        kept = 0 if is_batched else done
                        result.sent.extend(j.id for j in chunk[:kept])
                        result.unsent = [j.id for j in jobs[first + kept :]]
                        result.error = self._describe(exc)
                        break
                    result.sent.extend(j.id for j in chunk)
        except self._errors as exc:
            # Acquiring or releasing the producer failed: whatever was not sent is left over.
            sent = set(result.sent)
            result.unsent = [j.id for j in jobs if j.id not in sent]
            result.error = self._describe(exc)
        if result.error:
            logger.warning(
                "Published %d of %d job(s): %s", len(result.sent), len(jobs), result.error
            )
        else:
            logger.debug(
                "Published %d job(s) in %.1f ms", len(jobs), (time.perf_counter() - started) * 1e3
            )
        return result

    def _declare(self, producer: Any, jobs: Sequence[Job]) -> None:
        """Each queue the jobs go to and the task events' exchange, once, before any message.

        A declare that meets a connection error (a busy SQLite broker file, a dropped Redis
        connection) reconnects and retries on a new channel, but revives only what it
        declared: the producer is moved onto that channel too, else its next declare or
        publish meets the closed one (kombu's "channel disconnected" or an AttributeError,
        neither a send error).
        """
        queues = sorted({(job.variant, job.shadow_of is not None) for job in jobs})
        entities = [analyze_queue(variant, is_shadow=is_shadow) for variant, is_shadow in queues]
        for entity in [*entities, self.app.amqp._event_dispatcher.exchange]:
            producer.maybe_declare(entity, retry=True, **SEND_RETRY_POLICY)
            live = producer.connection.default_channel
            if producer.channel is not live:
                producer.revive(live)

    def _send(self, job: Job, producer: Any, *, retry: bool) -> None:
        """What `send_task` does for this message, without its per-message routing, queue
        copies and argument reprs: the same task message and task-sent event (Flower).

        `retry`: each publish under kombu's retry policy. A batched publish only buffers (its
        chunk fails or goes out as a whole at the batch's end), so it has nothing to retry."""
        # A shadow job waits in its variant's shadow queue, served only when the worker is idle.
        name = queue_of(job.variant, is_shadow=job.shadow_of is not None)
        kwargs = request_for(job).model_dump()
        headers, properties, body, event = self.app.amqp.as_task_v2(
            str(uuid.uuid4()), ANALYZE_TASK, kwargs=kwargs, argsrepr="()",
            kwargsrepr=repr(kwargs), create_sent_event=True, reply_to=self.app.thread_oid,
            ignore_result=None,
        )  # fmt: skip
        producer.publish(
            body, exchange="", routing_key=name, serializer="json", headers=headers,
            delivery_mode=self._delivery_mode, retry=retry, retry_policy=SEND_RETRY_POLICY,
            **properties,
        )  # fmt: skip
        # The task-sent event as send_task's dispatcher makes it (its exchange declared above).
        events = self.app.amqp._event_dispatcher
        sent = events._prepare_event(
            "task-sent", {**event, "queue": name, "exchange": "", "routing_key": name}
        )
        producer.publish(
            sent, routing_key="task.sent", exchange=events.exchange.name,
            serializer=events.serializer, headers=events.headers,
            delivery_mode=events.delivery_mode, retry=retry, retry_policy=SEND_RETRY_POLICY,
        )  # fmt: skip

    def _describe(self, exc: BaseException) -> str:
        return unreachable(self.settings.resolved_broker_url, exc)

    def close(self) -> None:
        self.app.close()
