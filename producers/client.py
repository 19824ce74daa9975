"""The client library upstream apps use: submit, submit_many, wait, status, cancel, feedback."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Unpack

from jobs.contracts import FINAL_STATUSES, Assignment, Status
from jobs.settings import Settings
from jobs.variants import Registry
from notices.webhooks import CallbackPolicy
from producers.errors import JobFinished, JobTimeout
from producers.feedback import FeedbackFields, FeedbackRecord, FeedbackValues, feedback_values
from producers.inputs import ImageInput, SubmitItem, as_item, check_item
from producers.services import Services
from store.lifecycle import CancelOutcome
from store.models import Delivery, Job
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
    """Producer-side entry point; one per process is plenty (it holds a broker pool).

    `Client(settings)` builds its own Services and closes them with itself; given `services`,
    it shares them (the gateway: one engine, router and broker pool) and leaves them open.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: Registry | None = None,
        callback_policy: CallbackPolicy | None = None,
        services: Services | None = None,
    ):
        self._owns_services = services is None
        if services is None:
            services = Services(settings, registry=registry, callback_policy=callback_policy)
        self._services = services
        self.settings = services.settings

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
        services = self._services
        policy, router, registry = services.callback_policy, services.router, services.registry
        checked = [check_item(as_item(raw), self.settings, policy) for raw in items]
        decisions = [router.decide(c.item.advisor, c.subject, c.item.variant) for c in checked]
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
                base_model=registry.get(decision.variant).base_model,
                idempotency_key=c.item.idempotency_key,
                model_used=decision.model_used,
                photo=c.image.photo.to_dict(),
                deliveries=c.deliveries,
                submitted_by=submitted_by,
                id=str(uuid.uuid4()),
            )
            new_jobs.append(primary)
            other = router.shadow_for(primary.advisor, decision, primary.id)
            if other is not None:
                shadows.append(shadow_of(primary, other, registry.get(other).base_model))
        stored, paired = services.repository.create_with_shadows(
            new_jobs, images, shadows, max_in_flight=max_in_flight
        )
        # Only rows this call created are published: a repeated idempotency key publishes once.
        result = services.outbox.publish([job for job, created in stored if created] + paired)
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

    # -- reading -------------------------------------------------------------------

    def status(self, job_id: str) -> Job:
        return self._services.repository.get(job_id)

    def job_id(self, text: str) -> str:
        """The full id for `text`: an id, or a unique prefix of at least 8 hex digits
        (AmbiguousJobId names the matches). The HTTP API takes full ids only."""
        return self._services.repository.resolve_id(text)

    def deliveries_of(self, job_id: str) -> list[Delivery]:
        """The job's outcome notices with their attempt log (JobNotFound for no such job)."""
        self._services.repository.get(job_id)
        return self._services.deliveries.of_job(job_id)

    def retry_deliveries(self, job_ids: Sequence[str] | None = None) -> list[str]:
        """Undelivered notices (of these jobs, or all) get a fresh set of attempts; their ids."""
        return self._services.deliveries.retry_undelivered(job_ids)

    # -- cancelling ----------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        """A queued job ends `cancelled` and never starts; a running one stops within about a
        second (its worker records `cancelled` and keeps the partial text). JobFinished if
        it already ended."""
        outcome, job = self._services.repository.cancel(job_id)
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
            job = self._services.repository.get(job_id)
            if on_update is not None:
                on_update(job)
            if Status(job.status) in FINAL_STATUSES:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(job_id, job.status, timeout)
            time.sleep(min(poll, remaining))

    def feedback(
        self, job_id: str, feedback: FeedbackValues | None = None, /,
        **fields: Unpack[FeedbackFields],
    ) -> FeedbackRecord:  # fmt: skip
        """The app's user's verdict on a succeeded job's critique: checked `feedback`, or its
        fields (`rating=4, helpful=True, comment=..., source=...`). A second one from the same
        source replaces the first (`replaced` says so)."""
        checked = feedback if feedback is not None else feedback_values(**fields)
        return self._services.feedback.record(job_id, checked)

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        if self._owns_services:
            self._services.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
