"""The worker's runtime: the message handler that starts each job, and what its runs share."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from advisor_worker.analyze import AnalyzeJob, BadRequest
from advisor_worker.backoff import call_with_backoff
from advisor_worker.batching import BatchScheduler, GenerationJob
from advisor_worker.errors import DatabaseUnavailable, WorkerError
from advisor_worker.generation import GenerationResult
from advisor_worker.provider import LoadedVariant, ModelProvider
from advisor_worker.scope import Delivery, Progress
from jobs.contracts import (
    PATH_PREFIX,
    STORED_PREFIX,
    ErrorKind,
    UnservedVersion,
    is_plausible_job_id,
    read_request,
)
from jobs.errors import InvalidImage, summary
from jobs.incidents import IncidentKind, incident
from jobs.settings import Settings
from photos.intake import Limits, read_path
from store.lifecycle import VariantIdentity
from store.repository import Repository

logger = logging.getLogger(__name__)

# A refusal is recorded on the consumer thread: a database outage must not stall consumption.
REFUSAL_RETRY_SECONDS = 5.0


@dataclass
class WorkerRuntime:
    """Everything one worker process needs to serve its variant; `handle` is the handler.

    Long-lived and shared by the B message threads of a batching worker: per-message state
    (the current job, its deadline, its progress) lives on the Delivery, never here.
    """

    settings: Settings
    repo: Repository
    provider: ModelProvider
    loaded: LoadedVariant
    worker: str
    # The continuous batch on the MLX thread, at every B; None only before it starts.
    scheduler: BatchScheduler | None = None

    @property
    def limits(self) -> Limits:
        return Limits.of(self.settings)

    def handle(self, delivery: Delivery) -> str:
        """Start the job the message names and run it; bad input fails the job, never us."""
        retry_until = delivery.retry_until
        try:
            request = read_request(delivery.payload)
        except ValidationError as exc:
            return self._reject_malformed(delivery, exc)
        except UnservedVersion as exc:
            return self._refuse_version(delivery, exc)
        job_id = request.job_id
        if request.variant != self.loaded.variant:
            logger.warning(
                "Job %s is for variant %r, not %r: dropped",
                job_id,
                request.variant,
                self.loaded.variant,
            )
            return "wrong_queue"
        started = call_with_backoff(
            lambda: self.repo.claim(
                job_id,
                self.worker,
                lease_seconds=self.settings.worker_live_window,
                max_attempts=self.settings.max_attempts,
                # Checked inside the same UPDATE: a drain to base between read and write can't
                # slip in.
                variant=request.variant,
                identity=VariantIdentity(self.loaded.base_model, self.loaded.adapter_fingerprint),
            ),
            what=f"Starting job {job_id}",
            deadline=retry_until,
        )
        if started.job is None:
            logger.info("Job %s not started: %s", job_id, started.outcome.value)
            return started.outcome.value
        delivery.start(started.job)
        return AnalyzeJob(
            self, started.job, retry_until, delivery.soft_limit, delivery.progress
        ).run()

    def failed(self, delivery: Delivery, exc: Exception) -> str:
        """The catch-all's verdict: a started job fails at once as `internal`, with the why."""
        job = delivery.job
        if job is None:
            logger.error("Job %s: unexpected error while handling its message", delivery.label,
                         exc_info=exc)  # fmt: skip
            return "error"
        # The job's error is the tenant's to read: the worker's log holds the traceback and
        # the exception's text (a driver's message, a host) under the reference.
        found = incident(exc, f"job {job.id}", kind=IncidentKind.INTERNAL, log=logger)
        run = AnalyzeJob(self, job, delivery.retry_until, delivery.soft_limit, delivery.progress)
        return run.fail(ErrorKind.INTERNAL, found.text)

    def generate(self, job: GenerationJob, progress: Progress) -> GenerationResult:
        """One job's generation: a row of the running batch (B=1 is a batch of one)."""
        if self.scheduler is None:
            raise WorkerError("The batch scheduler is not running; start_batching() first")
        progress.ticket = self.scheduler.submit(job, cancel=progress.cancel)
        return progress.ticket.result()

    def image_bytes(self, ref: str, retry_until: float) -> tuple[bytes, str | None]:
        """The image's bytes, and its file name when it has one (it helps tell RAW files)."""
        if ref.startswith(STORED_PREFIX):
            data = call_with_backoff(
                lambda: self.repo.image_bytes(ref.removeprefix(STORED_PREFIX)),
                what=f"Reading stored image {ref}",
                deadline=retry_until,
            )
            if data is None:
                raise InvalidImage(
                    f"Stored image {ref} is missing from the images table; resubmit it"
                )
            return data, None
        if ref.startswith(PATH_PREFIX):
            path = ref.removeprefix(PATH_PREFIX)
            return read_path(path, self.settings.image_roots, self.limits), Path(path).name
        raise BadRequest(
            ErrorKind.INVALID_REQUEST, f"image_ref {ref[:80]!r} is neither path: nor sha256:"
        )

    def _reject_malformed(self, delivery: Delivery, exc: ValidationError) -> str:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )[:2000]
        label = delivery.job_id
        logger.error("Malformed analyze payload (job %s): %s", label, problems)
        if label is not None:
            retry_for = delivery.retry_until - time.monotonic()
            self.record_malformed(label, problems, retry_for=retry_for)
        return "malformed"

    def _refuse_version(self, delivery: Delivery, exc: UnservedVersion) -> str:
        logger.error("Refused analyze message (job %s): %s", delivery.label, exc)
        if delivery.job_id is not None:
            self.record_refusal(
                delivery.job_id, str(exc), retry_for=delivery.retry_until - time.monotonic()
            )
        return "unserved_version"

    def record_refused(self, job_id: str, problem: str) -> None:
        """A message the consumer refused before it became a request; waits only briefly,
        since this runs on the consumer itself."""
        self.record_malformed(job_id, problem, retry_for=REFUSAL_RETRY_SECONDS)

    def record_malformed(self, job_id: str, problem: str, *, retry_for: float) -> None:
        """Fail the job a malformed message names, so its row says what happened."""
        self.record_refusal(job_id, f"Malformed task payload: {problem}", retry_for=retry_for)

    def record_refusal(self, job_id: str, message: str, *, retry_for: float) -> None:
        """Fail a job whose message was refused, with `message` as the reason.

        Best effort: an implausible id is never looked up, and a database that refuses or
        stays away for `retry_for` seconds is logged, never raised into the consumer.
        """
        if not is_plausible_job_id(job_id):
            logger.error("Refused message names no valid job id; nothing recorded")
            return
        try:
            recorded = call_with_backoff(
                lambda: self.repo.fail(job_id, ErrorKind.INVALID_REQUEST, message),
                what=f"Recording the refused message of job {job_id}",
                deadline=time.monotonic() + max(0.0, retry_for),
            )
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            logger.error("Could not record the refused message of job %s: %s", job_id,
                         summary(exc, typed=True, limit=300))  # fmt: skip
            return
        if not recorded:
            logger.error("Job %s of the refused message is unknown or already final", job_id)
