"""The analyze work: start the job, load the image, generate, validate, record the outcome."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from advisor_worker import prompts
from advisor_worker.backoff import call_with_backoff
from advisor_worker.batching import BatchScheduler, GenerationJob, Ticket
from advisor_worker.errors import (
    DatabaseUnavailable,
    GenerationCancelled,
    GenerationTimeout,
    InvalidOutput,
    WorkerError,
)
from advisor_worker.generation import GenerationResult
from advisor_worker.heartbeat import Heartbeat
from advisor_worker.notices import NoticeThread
from advisor_worker.provider import LoadedVariant, ModelProvider
from advisor_worker.watchdog import Watchdog
from jobs.advisors import get_persona
from jobs.analysis import SCHEMA_VERSION, Analysis, GeneratedAnalysis, generation_schema
from jobs.contracts import AnalyzeRequest, ErrorKind, is_plausible_job_id
from jobs.errors import InvalidImage, UnknownAdvisor, UnsupportedFormat, summary
from jobs.images import (
    PATH_PREFIX,
    STORED_PREFIX,
    Limits,
    Prepared,
    image_tokens,
    prepare,
    read_path,
)
from jobs.models import Job
from jobs.repository import ModelInput, Outcome, Repository, StartOutcome, VariantIdentity
from jobs.settings import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Database retries give up this long before the hard limit, so the task ends on its own terms.
RETRY_MARGIN_SECONDS = 1.0


class BadRequest(Exception):
    """A job input problem that fails the job at once (no retry)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Progress:
    """A running job's output-token count, written on the MLX thread, read by the heartbeat,
    and its cancel flag, set by the heartbeat, read by the MLX thread after every step."""

    def __init__(self) -> None:
        self.tokens = 0
        self.ticket: Ticket | None = None
        self.cancel = threading.Event()

    def set(self, tokens: int) -> None:
        self.tokens = tokens

    def read(self) -> int:
        return self.ticket.tokens if self.ticket is not None else self.tokens


@dataclass
class WorkerRuntime:
    """Everything one worker process needs to serve its variant.

    Long-lived and shared by the B message threads of a batching worker: per-job state
    (the job id, its retry deadline, its progress) is passed along explicitly, never kept here.
    """

    settings: Settings
    repo: Repository
    provider: ModelProvider
    loaded: LoadedVariant
    heartbeat: Heartbeat
    # The hard time limit; None (tests, `check`) leaves only the soft one.
    watchdog: Watchdog | None = None
    # The continuous batch on the MLX thread, at every B; None only before it starts.
    scheduler: BatchScheduler | None = None
    # Sends a handled job's due outcome notices; None: the sweep sends them all.
    notices: NoticeThread | None = None

    @property
    def worker(self) -> str:
        return self.heartbeat.worker

    @property
    def limits(self) -> Limits:
        return Limits(self.settings.max_image_bytes, self.settings.max_image_pixels)

    def handle(self, payload: Any, *, soft_limit: float | None = None) -> str:
        """Process one message and say what happened; bad input fails the job, never the worker.

        `soft_limit` (seconds, from the message's own time limit) can only shorten the
        configured ADVISOR_TASK_TIME_LIMIT-derived soft limit.
        """
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        label = job_id if is_plausible_job_id(job_id) else "(no valid job id)"
        with self._armed(str(label)) as deadline:
            retry_until = deadline - RETRY_MARGIN_SECONDS
            soft = float(self.settings.soft_time_limit)
            if soft_limit is not None and soft_limit > 0:
                soft = min(soft, soft_limit)
            try:
                result = self._handle(payload, retry_until, soft)
            except DatabaseUnavailable as exc:
                # The job's lease expires and the sweep hands it on; nothing else to do here.
                logger.error("Job %s: %s", label, exc)
                result = "database_unavailable"
            except Exception as exc:
                # The catch-all: one message's failure never reaches Celery or the worker.
                logger.error("Job %s: unexpected error while handling its message", label,
                             exc_info=exc)  # fmt: skip
                result = "error"
        if self.notices is not None and is_plausible_job_id(job_id):
            # Whatever ended the job (or ended it earlier, if its notices are still due).
            self.notices.hand_off(str(job_id))
        return result

    @contextmanager
    def _armed(self, label: str) -> Iterator[float]:
        if self.watchdog is None:
            yield time.monotonic() + self.settings.task_time_limit
            return
        with self.watchdog.armed(label) as deadline:
            yield deadline

    def _handle(self, payload: Any, retry_until: float, soft_limit: float) -> str:
        try:
            request = AnalyzeRequest.model_validate(payload)
        except ValidationError as exc:
            return self._reject_malformed(payload, exc, retry_until)
        job_id = request.job_id
        if request.variant != self.loaded.variant:
            logger.warning(
                "Job %s is for variant %r, not %r: dropped",
                job_id,
                request.variant,
                self.loaded.variant,
            )
            return "wrong_queue"
        outcome = call_with_backoff(
            lambda: self.repo.start(
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
        if outcome is not StartOutcome.STARTED:
            logger.info("Job %s not started: %s", job_id, outcome.value)
            return outcome.value
        row = call_with_backoff(
            lambda: self.repo.get(job_id), what=f"Reading job {job_id}", deadline=retry_until
        )
        _warn_if_message_differs(request, row)
        progress = _Progress()
        self.heartbeat.track(job_id, progress.read, on_cancel=progress.cancel.set)
        try:
            return _Job(self, row, retry_until, soft_limit, progress).run()
        finally:
            self.heartbeat.untrack(job_id)
            try:
                self.repo.count_done(self.worker)
            except SQLAlchemyError as exc:
                # A statistic only; it must not hide how the job itself ended.
                logger.warning("Could not count job %s as done: %s", job_id, type(exc).__name__)

    def generate(self, job: GenerationJob, progress: _Progress) -> GenerationResult:
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

    def _reject_malformed(self, payload: Any, exc: ValidationError, retry_until: float) -> str:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )[:2000]
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        label = job_id if is_plausible_job_id(job_id) else None
        logger.error("Malformed analyze payload (job %s): %s", label, problems)
        if label is not None:
            self.record_malformed(label, problems, retry_for=retry_until - time.monotonic())
        return "malformed"

    def record_malformed(self, job_id: str, problem: str, *, retry_for: float) -> None:
        """Fail the job a refused message names, so its row says what happened.

        Best effort: an implausible id is never looked up, and a database that refuses or
        stays away for `retry_for` seconds is logged, never raised into the consumer.
        """
        if not is_plausible_job_id(job_id):
            logger.error("Refused message names no valid job id; nothing recorded")
            return
        message = f"Malformed task payload: {problem}"
        try:
            recorded = call_with_backoff(
                lambda: self.repo.fail(job_id, ErrorKind.INVALID_REQUEST, message),
                what=f"Recording the malformed payload of job {job_id}",
                deadline=time.monotonic() + max(0.0, retry_for),
            )
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            logger.error("Could not record the malformed payload of job %s: %s", job_id,
                         summary(exc, typed=True, limit=300))  # fmt: skip
            return
        if not recorded:
            logger.error("Job %s of the malformed payload is unknown or already final", job_id)


@dataclass
class _Job:
    """One started job's run: load the image, generate, validate, record; state is its own."""

    runtime: WorkerRuntime
    row: Job  # as started: the row, not the message, says which image and advisor
    retry_until: float
    soft_limit: float
    progress: _Progress

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def job_id(self) -> str:
        return self.row.id

    def _db(self, what: str, fn: Callable[[], T]) -> T:
        """A repository call that waits out a database outage until just before the hard limit."""
        return call_with_backoff(fn, what=what, deadline=self.retry_until)

    def run(self) -> str:
        """The job's outcome; whatever it raises fails it at once as `internal`, with the why."""
        try:
            return self._run()
        except DatabaseUnavailable:
            raise  # nothing can be recorded now; the lease expires and the sweep hands it on
        except Exception as exc:
            logger.error("Job %s failed unexpectedly", self.job_id, exc_info=exc)
            return self._fail(
                ErrorKind.INTERNAL,
                f"Unexpected {summary(exc, typed=True, limit=1000)} while handling the job; "
                "the worker's log has the traceback",
            )

    def _run(self) -> str:
        runtime, job_id, row = self.runtime, self.job_id, self.row
        try:
            data, name = runtime.image_bytes(row.image_ref, self.retry_until)
            check_digest(data, row)
            prepared = prepare(data, runtime.limits, runtime.loaded.geometry, name=name)
            persona = get_persona(row.advisor)
        except UnsupportedFormat as exc:
            return self._fail(ErrorKind.UNSUPPORTED_FORMAT, str(exc))
        except InvalidImage as exc:
            return self._fail(ErrorKind.INVALID_IMAGE, str(exc))
        except UnknownAdvisor as exc:
            return self._fail(ErrorKind.UNKNOWN_ADVISOR, str(exc))
        except BadRequest as exc:
            return self._fail(exc.kind, str(exc))
        system = prompts.system_prompt(persona)
        with_capture = self.settings.prompt_capture
        user = prompts.user_prompt(prepared.photo.capture if with_capture else None)
        self._record_input(prepared, prompts.prompt_version(with_capture), system, user)
        job = GenerationJob(
            job_id=job_id,
            image=prepared.image,
            system_prompt=system,
            user_text=user,
            schema=generation_schema(self.settings.text_limit),
            max_tokens=self.settings.max_output_tokens,
            temperature=self.settings.temperature,
            seed=_seed_for(job_id),
            deadline=time.monotonic() + self.soft_limit,
        )
        started = time.perf_counter()
        try:
            result = runtime.generate(job, self.progress)
        except GenerationCancelled as exc:
            return self._cancelled(exc, _ms_since(started))
        except GenerationTimeout as exc:
            message = (
                f"Soft time limit of {self.soft_limit:g}s reached: {exc}; the partial "
                "output is kept in raw_output. Raise ADVISOR_TASK_TIME_LIMIT or lower "
                "ADVISOR_MAX_OUTPUT_TOKENS"
            )
            return self._fail(
                ErrorKind.TIMEOUT, message, raw_output=exc.partial,
                output_tokens=exc.output_tokens, inference_ms=_ms_since(started),
            )  # fmt: skip
        except InvalidOutput as exc:
            return self._fail(ErrorKind.INVALID_OUTPUT, str(exc), inference_ms=_ms_since(started))
        except WorkerError as exc:
            return self._fail(ErrorKind.INTERNAL, str(exc), inference_ms=_ms_since(started))
        inference_ms = _ms_since(started)
        try:
            analysis = parse_analysis(
                result.text, result.finish_reason, self.settings.max_output_tokens
            )
        except InvalidOutput as exc:
            return self._fail(
                ErrorKind.INVALID_OUTPUT, str(exc), raw_output=result.text,
                output_tokens=result.output_tokens, inference_ms=inference_ms,
            )  # fmt: skip
        outcome = Outcome(
            llm_outputs=analysis.model_dump(mode="json"),
            raw_output=result.text,
            prompt_tokens=result.prompt_tokens,
            output_tokens=result.output_tokens,
            inference_ms=inference_ms,
            schema_version=SCHEMA_VERSION,
        )
        recorded = self._db(
            f"Recording the analysis of job {job_id}",
            lambda: runtime.repo.succeed(job_id, runtime.worker, outcome),
        )
        if not recorded:
            return self._lost("succeeded")
        return "succeeded"

    def _record_input(self, prepared: Prepared, version: str, system: str, user: str) -> None:
        """Store what the model gets; with ADVISOR_MODEL_INPUT_DIR, also its pixels and prompt."""
        runtime, job_id = self.runtime, self.job_id
        width, height = prepared.image.size
        model_input = ModelInput(
            prepared.photo.to_dict(), version, width, height,
            image_tokens(width, height, runtime.loaded.geometry),
        )  # fmt: skip
        self._db(
            f"Recording the model input of job {job_id}",
            lambda: runtime.repo.attach_model_input(job_id, runtime.worker, model_input),
        )
        folder = self.settings.model_input_dir
        if folder is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            prepared.image.save(folder / f"{job_id}.png")
            (folder / f"{job_id}.txt").write_text(f"{system}\n\n{user}\n")
        except OSError as exc:
            # A debugging aid: failing to write it must not fail the job.
            logger.warning("Model input of job %s not saved in %s: %s", job_id, folder, exc)

    def _fail(self, kind: ErrorKind, message: str, **details: Any) -> str:
        """Record a failure, waiting out a database outage; returns the error kind."""
        runtime, job_id = self.runtime, self.job_id
        recorded = self._db(
            f"Recording the failure of job {job_id}",
            lambda: runtime.repo.fail(job_id, kind, message, worker=runtime.worker, **details),
        )
        return kind.value if recorded else self._lost(kind.value)

    def _cancelled(self, exc: GenerationCancelled, inference_ms: int) -> str:
        """Record the cancel its submitter asked for, with the text generated until then."""
        runtime, job_id = self.runtime, self.job_id
        recorded = self._db(
            f"Recording the cancel of job {job_id}",
            lambda: runtime.repo.record_cancelled(
                job_id, runtime.worker, f"Cancelled while generating: {exc}",
                raw_output=exc.partial, output_tokens=exc.output_tokens,
                inference_ms=inference_ms,
            ),
        )  # fmt: skip
        return "cancelled" if recorded else self._lost("cancelled")

    def _lost(self, result: str) -> str:
        # The guarded write refused: the lease expired and the job went elsewhere (or finished).
        logger.warning(
            "Job %s %s here but was no longer held by %s (lease lost); outcome discarded, "
            "the job's current holder decides it",
            self.job_id,
            result,
            self.runtime.worker,
        )
        return "lost_lease"


def check_digest(data: bytes, row: Job) -> None:
    """The bytes read now must be the ones submitted: a file swapped since then is refused."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != row.image_sha256:
        raise InvalidImage(
            f"Image {row.image_ref[:200]!r} changed since it was submitted (sha256 "
            f"{digest[:12]}..., submitted as {row.image_sha256[:12]}...); resubmit the photo"
        )


def _warn_if_message_differs(request: AnalyzeRequest, row: Job) -> None:
    if (request.advisor, request.image_ref) != (row.advisor, row.image_ref):
        logger.warning(
            "Job %s: the message names advisor %r and image %r, the row %r and %r; the row "
            "is served", row.id, request.advisor[:64], request.image_ref[:200], row.advisor,
            row.image_ref[:200],
        )  # fmt: skip


def parse_analysis(text: str, finish_reason: str, max_tokens: int) -> Analysis:
    """Validate generated text and compute overall_score; raise InvalidOutput naming the problem."""
    if finish_reason == "length":
        raise InvalidOutput(
            f"Output truncated at the {max_tokens}-token cap (ADVISOR_MAX_OUTPUT_TOKENS); "
            "raise the cap or lower ADVISOR_TEXT_LIMIT"
        )
    try:
        generated = GeneratedAnalysis.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise InvalidOutput(f"Output is not JSON: {exc}") from exc
    except ValidationError as exc:
        raise InvalidOutput(
            f"Output does not match the Analysis schema: {exc.errors()[:3]}"
        ) from exc
    return Analysis.from_generated(generated)


def _seed_for(job_id: str) -> int:
    # Reproducible per job: a redelivered job samples the same way.
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:4], "big")


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
