"""The client library upstream apps use: submit, submit_many, wait, status, cancel, feedback."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from jobs.contracts import FINAL_STATUSES, Assignment, Status
from jobs.settings import Settings, get_settings
from jobs.variants import Registry, load_registry_for
from notices.courier import Courier, policy_of
from notices.webhooks import CallbackPolicy
from producers.errors import JobFinished, JobTimeout
from producers.feedback import DEFAULT_SOURCE, FeedbackRecord, FeedbackStore
from producers.inputs import ImageInput, SubmitItem, as_item, check_item
from producers.outbox import REPUBLISH_GRACE_SECONDS, Outbox
from producers.publisher import Publisher, PublishResult
from producers.rollouts import RolloutStore
from producers.router import Router
from store.db import engine_for
from store.deliveries import DeliveryStore
from store.lifecycle import CancelOutcome
from store.models import Delivery, Job
from store.repository import Repository
from store.submissions import NewJob

DEFAULT_WAIT_SECONDS = 600.0


def shadow_of(primary: NewJob, variant: str, base_model: str | None) -> NewJob:
    """The same photo and subject on `variant`, linked to `primary`; no key: never returned."""
    return NewJob(
        advisor=primary.advisor, image_sha256=primary.image_sha256, image_ref=primary.image_ref,
        subject=primary.subject, variant=variant, assignment=Assignment.SHADOW,
        weights_version=primary.weights_version, base_model=base_model,
        shadow_of=primary.id, id=str(uuid.uuid4()),
    )  # fmt: skip


@dataclass(frozen=True)
class JobHandle:
    """A submitted job as the producer wrote it; `wait()` blocks until it finishes."""

    id: str
    advisor: str
    variant: str
    assignment: Assignment
    model_used: str
    weights_version: int
    subject: str
    image_ref: str
    created: bool  # False: an earlier submit with the same idempotency key made it
    published: bool
    publish_error: str | None
    client: Client = field(repr=False, compare=False)

    def wait(
        self,
        timeout: float = DEFAULT_WAIT_SECONDS,
        *,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        return self.client.wait(self.id, timeout, on_update=on_update)

    def status(self) -> Job:
        return self.client.status(self.id)


class Client:
    """Producer-side entry point; one per process is plenty (it holds a broker pool)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: Registry | None = None,
        callback_policy: CallbackPolicy | None = None,
    ):
        self.settings = settings or get_settings()
        self.registry = registry or load_registry_for(self.settings)
        self.engine = engine_for(self.settings.resolved_database_url)
        self.repository = Repository(self.engine)
        self.deliveries = DeliveryStore(self.engine)
        self.rollouts = RolloutStore(self.engine)
        self.feedback_store = FeedbackStore(self.engine)
        self.router = Router(self.settings, self.registry, self.rollouts, self.repository)
        self.callback_policy = callback_policy or policy_of(self.settings)
        self._publisher: Publisher | None = None
        self._outbox: Outbox | None = None
        self._courier: Courier | None = None

    @property
    def publisher(self) -> Publisher:
        # Lazy: status and wait need no broker.
        if self._publisher is None:
            self._publisher = Publisher(self.settings)
        return self._publisher

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            self._outbox = Outbox(self.repository, self.publisher)
        return self._outbox

    @property
    def courier(self) -> Courier:
        """Sends due outcome notices (the sweep's step; `advisor deliveries retry`)."""
        if self._courier is None:
            self._courier = Courier(
                self.settings,
                self.deliveries,
                sender=f"producer {socket.gethostname()}:{os.getpid()}",
            )
        return self._courier

    # -- submitting ----------------------------------------------------------------

    def submit(
        self,
        image: ImageInput,
        advisor: str,
        *,
        subject: str | None = None,
        variant: str | None = None,
        idempotency_key: str | None = None,
        notify: str | None = None,
        notify_queue: str | None = None,
        callback_url: str | None = None,
        submitted_by: str | None = None,
        max_in_flight: int | None = None,
    ) -> JobHandle:
        """One job. `notify` + `notify_queue`: once the job ends, a Celery task of that name
        goes to that queue with the outcome; `callback_url`: the outcome is POSTed there,
        signed (README "Results delivered"). Both at least once."""
        item = SubmitItem(image, advisor, subject, variant, idempotency_key, notify,
                          notify_queue, callback_url)  # fmt: skip
        return self.submit_many([item], submitted_by=submitted_by, max_in_flight=max_in_flight)[0]

    def submit_many(
        self,
        items: Iterable[SubmitItem | Mapping[str, Any]],
        *,
        submitted_by: str | None = None,
        max_in_flight: int | None = None,
    ) -> list[JobHandle]:
        """Validate and route all, write all rows in one transaction, then publish them.

        `submitted_by` (an API key's name) is recorded on every row; with `max_in_flight` that
        submitter may have at most so many jobs queued or running (QuotaExceeded otherwise).
        """
        checked = [check_item(as_item(raw), self.settings, self.callback_policy) for raw in items]
        decisions = [self.router.decide(c.item.advisor, c.subject, c.item.variant) for c in checked]
        new_jobs: list[NewJob] = []
        shadows: list[NewJob] = []
        images: dict[str, bytes] = {}
        for c, decision in zip(checked, decisions, strict=True):
            if c.image.is_stored:
                images[c.image.sha256] = c.image.data
            primary = NewJob(
                advisor=c.item.advisor,
                image_sha256=c.image.sha256,
                image_ref=c.image.ref,
                subject=c.subject,
                variant=decision.variant,
                assignment=decision.assignment,
                weights_version=decision.weights_version,
                base_model=self.registry.get(decision.variant).base_model,
                idempotency_key=c.item.idempotency_key,
                model_used=decision.model_used,
                photo=c.image.photo.to_dict(),
                deliveries=c.deliveries,
                submitted_by=submitted_by,
                id=str(uuid.uuid4()),
            )
            new_jobs.append(primary)
            other = self.router.shadow_for(primary.advisor, decision, primary.id)
            if other is not None:
                shadows.append(shadow_of(primary, other, self.registry.get(other).base_model))
        stored, paired = self.repository.create_with_shadows(
            new_jobs, images, shadows, max_in_flight=max_in_flight
        )
        # Only rows this call created are published: a repeated idempotency key publishes once.
        result = self.publish([job for job, created in stored if created] + paired)
        unsent = set(result.unsent)
        return [self._handle(job, created, unsent, result.error) for job, created in stored]

    def _handle(self, job: Job, created: bool, unsent: set[str], error: str | None) -> JobHandle:
        # Another submit's job: unpublished only if its publish is known to have failed. A
        # row without published_at may be mid-publish by its creator, or already started.
        published = (
            job.id not in unsent
            if created
            else job.published_at is not None
            or job.status != Status.QUEUED
            or not job.publish_error
        )
        return JobHandle(
            id=job.id,
            advisor=job.advisor,
            variant=job.variant,
            assignment=Assignment(job.assignment),
            model_used=job.model_used,
            weights_version=job.weights_version,
            subject=job.subject,
            image_ref=job.image_ref,
            created=created,
            published=published,
            publish_error=error if created and not published else job.publish_error,
            client=self,
        )

    def publish(self, jobs: Sequence[Job]) -> PublishResult:
        """Send the jobs and record the outcome on their rows (published, or publish_error)."""
        return self.outbox.publish(jobs)

    def republish(self, limit: int = 500, *, grace: float = REPUBLISH_GRACE_SECONDS) -> int:
        """Send queued jobs that were never published (or were drained/handed back); a count."""
        return self.outbox.republish(limit, grace=grace)

    # -- reading -------------------------------------------------------------------

    def status(self, job_id: str) -> Job:
        return self.repository.get(job_id)

    def job_id(self, text: str) -> str:
        """The full id for `text`: an id, or a unique prefix of at least 8 hex digits
        (AmbiguousJobId names the matches). The HTTP API takes full ids only."""
        return self.repository.resolve_id(text)

    def deliveries_of(self, job_id: str) -> list[Delivery]:
        """The job's outcome notices with their attempt log (JobNotFound for no such job)."""
        self.repository.get(job_id)
        return self.deliveries.of_job(job_id)

    def retry_deliveries(self, job_ids: Sequence[str] | None = None) -> list[str]:
        """Undelivered notices (of these jobs, or all) get a fresh set of attempts; their ids."""
        return self.deliveries.retry_undelivered(job_ids)

    # -- cancelling ----------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        """A queued job ends `cancelled` and never starts; a running one stops within about a
        second (its worker records `cancelled` and keeps the partial text). JobFinished if
        it already ended."""
        outcome, job = self.repository.cancel(job_id)
        if outcome is CancelOutcome.FINISHED:
            raise JobFinished(job.id, job.status)
        return job

    def wait(
        self,
        job_id: str,
        timeout: float = DEFAULT_WAIT_SECONDS,
        *,
        poll: float = 0.25,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll the row until it is final (succeeded, failed or cancelled); JobTimeout (a
        TimeoutError) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.repository.get(job_id)
            if on_update is not None:
                on_update(job)
            if Status(job.status) in FINAL_STATUSES:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(job_id, job.status, timeout)
            time.sleep(min(poll, remaining))

    def feedback(
        self,
        job_id: str,
        *,
        rating: int,
        helpful: bool | None = None,
        comment: str | None = None,
        source: str = DEFAULT_SOURCE,
    ) -> FeedbackRecord:
        """The app's user's verdict on a succeeded job's critique (rating 1-5); a second one
        from the same `source` replaces the first (`replaced` says so)."""
        return self.feedback_store.record(
            job_id, rating, helpful=helpful, comment=comment, source=source
        )

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        if self._courier is not None:
            self._courier.close()
            self._courier = None
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
            self._outbox = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
