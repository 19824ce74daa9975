"""The client library upstream apps use: submit, submit_many, wait, status, republish."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from jobs.contracts import FINAL_STATUSES, Assignment, Status
from jobs.db import engine_for
from jobs.models import Job
from jobs.repository import NewJob, Repository
from jobs.rollouts import RolloutStore
from jobs.settings import Settings, get_settings
from jobs.variants import Registry, load_registry
from producers.errors import JobTimeout
from producers.inputs import ImageInput, SubmitItem, as_item, check_item
from producers.outbox import REPUBLISH_GRACE_SECONDS, Outbox
from producers.publisher import Publisher, PublishResult
from producers.router import Router

DEFAULT_WAIT_SECONDS = 600.0


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

    def __init__(self, settings: Settings | None = None, *, registry: Registry | None = None):
        self.settings = settings or get_settings()
        self.registry = registry or load_registry(self.settings.registry, self.settings.base_model)
        self.engine = engine_for(self.settings.resolved_database_url)
        self.repository = Repository(self.engine)
        self.rollouts = RolloutStore(self.engine)
        self.router = Router(self.settings, self.registry, self.rollouts, self.repository)
        self._publisher: Publisher | None = None
        self._outbox: Outbox | None = None

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

    # -- submitting ----------------------------------------------------------------

    def submit(
        self,
        image: ImageInput,
        advisor: str,
        *,
        subject: str | None = None,
        variant: str | None = None,
        idempotency_key: str | None = None,
        submitted_by: str | None = None,
        max_in_flight: int | None = None,
    ) -> JobHandle:
        item = SubmitItem(image, advisor, subject, variant, idempotency_key)
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
        checked = [check_item(as_item(raw), self.settings) for raw in items]
        decisions = [self.router.decide(c.item.advisor, c.subject, c.item.variant) for c in checked]
        new_jobs: list[NewJob] = []
        images: dict[str, bytes] = {}
        for c, decision in zip(checked, decisions, strict=True):
            if c.image.is_stored:
                images[c.image.sha256] = c.image.data
            new_jobs.append(
                NewJob(
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
                    submitted_by=submitted_by,
                )
            )
        stored = self.repository.create_jobs(new_jobs, images, max_in_flight=max_in_flight)
        # Only rows this call created are published: a repeated idempotency key publishes once.
        result = self.publish([job for job, created in stored if created])
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

    def wait(
        self,
        job_id: str,
        timeout: float = DEFAULT_WAIT_SECONDS,
        *,
        poll: float = 0.25,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll the row until it succeeds or fails; JobTimeout (a TimeoutError) otherwise."""
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

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
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
