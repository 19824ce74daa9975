"""The recovery sweep: jobs of dead workers re-queued (or given up as poison), lost messages resent.

The database is the source of truth; the broker only carries wake-ups. A round:
1. a `running` job whose lease expired (its worker's heartbeat stopped) goes back to `queued`,
   or fails as poison once it has used ADVISOR_MAX_ATTEMPTS, or ends `cancelled` when a
   cancel was requested;
2. a `queued` job published longer ago than the live window, while its variant's broker
   queue is empty, lost its message (a broker restart without persistence, a consumed
   message whose worker died on the embedded broker): it is published again;
3. queued jobs never published (publish failed, re-queued, drained) are published;
4. outcome notices that are due are sent: retries whose time has come, and first sends a
   worker never made (it died between recording the outcome and sending).
A duplicate message is harmless: the worker's guarded start drops it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from celery import Celery
from kombu.exceptions import KombuError
from sqlalchemy.exc import SQLAlchemyError

from jobs.broker import beat_entry, queue_depths
from jobs.clock import utcnow
from jobs.contracts import SWEEP_TASK, Status, queue_of
from jobs.errors import BrokerUnreachable, summary
from jobs.settings import Settings
from notices.courier import Courier, DeliveryRound
from producers.errors import PublishFailed
from producers.ops.rounds import run_rounds
from producers.outbox import Outbox
from producers.services import Services
from store.models import Job
from store.repository import Repository

logger = logging.getLogger(__name__)

# Who sent a notice, as its attempt log shows it.
SWEEP_SENDER = f"sweep {socket.gethostname()}:{os.getpid()}"


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    poisoned: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)  # queued, but their message was lost
    republished: int = 0  # every publish of this round, the resent ones included
    publish_error: str | None = None
    cancelled: list[str] = field(default_factory=list)  # cancel requested, worker gone
    deliveries: DeliveryRound = field(default_factory=DeliveryRound)
    delivery_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        d = self.deliveries
        text = (
            f"requeued {len(self.requeued)}, poison {len(self.poisoned)}, "
            f"cancelled {len(self.cancelled)}, lost messages {len(self.resent)}, "
            f"published {self.republished}, notices delivered {len(d.delivered)} "
            f"(retrying {len(d.retrying)}, undelivered {len(d.undelivered)})"
        )
        text += f"; publish failed: {self.publish_error}" if self.publish_error else ""
        return text + (f"; notices: {self.delivery_error}" if self.delivery_error else "")


class NoticeRounds:
    """Delivery rounds on a thread of their own, one at a time."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._last: tuple[DeliveryRound, str | None] = (DeliveryRound(), None)

    @property
    def last(self) -> tuple[DeliveryRound, str | None]:
        return self._last

    def start(self, courier: Courier, limit: int) -> tuple[DeliveryRound, str | None]:
        """Start a round unless one is still sending; returns the last finished one."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._round, args=(courier, limit), name="sweep-notices", daemon=True
            )
            self._thread.start()
        return self._last

    def _round(self, courier: Courier, limit: int) -> None:
        try:
            self._last = (courier.deliver_due(limit, by=SWEEP_SENDER), None)
        except Exception as exc:  # noqa: BLE001 - a round that fails is tried again next round
            # Claimed ones not recorded go out again once their claim lapses.
            error = summary(exc, typed=True, limit=300)
            logger.warning("Sweep could not finish sending notices: %s", error)
            self._last = (DeliveryRound(), error)

    def wait(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


@dataclass(frozen=True)
class Sweeper:
    """The sweep over one database and broker: `sweep()` is one round."""

    settings: Settings  # max_attempts, worker_live_window
    repository: Repository
    outbox: Outbox
    broker: Celery  # asked for queue depths
    courier: Courier | None = None  # None: outcome notices are left to another sweep
    _notices: NoticeRounds = field(default_factory=lambda: NoticeRounds(), compare=False)

    def sweep(self, *, limit: int = 500) -> SweepReport:
        """One recovery round; see the module docstring."""
        repo, max_attempts = self.repository, self.settings.max_attempts
        report = SweepReport()
        for job in repo.expired_running(limit):
            if job.cancel_requested_at is not None:
                if repo.cancel_abandoned(job.id):
                    logger.warning("Job %s cancelled: its worker %s stopped before it could",
                                   job.id, job.worker)  # fmt: skip
                    report.cancelled.append(job.id)
            elif job.attempts >= max_attempts:
                if repo.give_up(job.id, max_attempts):
                    logger.warning("Job %s is poison: %d attempts lost their worker (last %s)",
                                   job.id, job.attempts, job.worker)  # fmt: skip
                    report.poisoned.append(job.id)
            elif repo.requeue(
                job.id, f"lease of worker {job.worker} expired; re-queued by the sweep"
            ):
                logger.warning("Job %s re-queued: worker %s stopped renewing its lease",
                               job.id, job.worker)  # fmt: skip
                report.requeued.append(job.id)
        try:
            lost = self.lost_messages(limit=limit)
            if lost:
                result = self.outbox.publish(lost)
                report.resent = result.sent
                report.republished += len(result.sent)
                logger.warning("Resent %d job(s) whose broker message was lost", len(result.sent))
                if result.error:
                    raise PublishFailed(result.error)
            report.republished += self.outbox.republish(limit)
        except PublishFailed as exc:
            # The rows stay queued; the next round tries again.
            report.publish_error = str(exc)
            logger.warning("Sweep could not publish: %s", exc)
        if self.courier is not None:
            # Beside recovery, never in its way: the next round recovers jobs on time however
            # slowly receivers answer. The report carries the last finished delivery round.
            report.deliveries, report.delivery_error = self._notices.start(self.courier, limit)
        return report

    def finish_notices(self, report: SweepReport, timeout: float) -> SweepReport:
        """Wait up to `timeout` seconds for the delivery round in flight (a one-shot sweep,
        before closing) and put its outcome on `report`."""
        self._notices.wait(timeout)
        report.deliveries, report.delivery_error = self._notices.last
        return report

    def lost_messages(self, *, limit: int = 500) -> list[Job]:
        """Queued jobs published over a live window ago whose variant's queue is empty."""
        cutoff = utcnow() - timedelta(seconds=self.settings.worker_live_window)
        stale = self.repository.find(
            Job.status == Status.QUEUED, Job.published_at < cutoff, limit=limit
        )
        if not stale:
            return []
        try:
            depths = queue_depths(self.broker, sorted({_queue(j) for j in stale}))
        except BrokerUnreachable as exc:
            logger.warning("Queue depths unknown (%s); the next round looks again", exc)
            return []
        return [job for job in stale if depths[_queue(job)] == 0]

    def run_loop(
        self,
        *,
        interval: float,
        limit: int = 500,
        stop: threading.Event | None = None,
        on_round: Callable[[SweepReport], None] | None = None,
        delay_first: bool = False,
    ) -> int:
        """Sweep every `interval` seconds until `stop` is set; returns the rounds run, once the
        last round's notices are sent (or their claims have lapsed)."""
        rounds = run_rounds(
            "Sweep", lambda: self.sweep(limit=limit), interval=interval,
            transient=(SQLAlchemyError, KombuError, OSError), stop=stop, on_round=on_round,
            delay_first=delay_first,
        )  # fmt: skip
        # The round runs on its own thread: left running, it would keep using the database
        # (and its pool) after the loop's owner has closed them.
        if self.courier is not None:
            self._notices.wait(self.courier.lease_seconds)
        return rounds


def _queue(job: Job) -> str:
    """The queue the job's message waits in (a shadow job's: its variant's shadow queue)."""
    return queue_of(job.variant, is_shadow=job.shadow_of is not None)


def register_sweep_task(app: Celery, settings: Settings) -> Any:
    """Register SWEEP_TASK on `app`; schedule it with `beat_schedule()`."""

    @app.task(name=SWEEP_TASK, ignore_result=True)
    def sweep_task() -> dict[str, Any]:
        with Services(settings, sender=SWEEP_SENDER) as built:
            sweeper = Sweeper(settings, built.repository, built.outbox, built.broker, built.courier)
            report = sweeper.sweep()
            return sweeper.finish_notices(report, built.courier.lease_seconds).to_dict()

    return sweep_task


def beat_schedule(interval_seconds: float, *, queue: str | None = None) -> dict[str, Any]:
    """The entry for `app.conf.beat_schedule`; a run older than one interval is dropped."""
    return beat_entry("advisor-sweep", SWEEP_TASK, interval_seconds, queue=queue)
