"""The analyze work: start the job, load the image, generate, validate, record the outcome."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from advisor_worker import prompts
from advisor_worker.backoff import call_with_backoff
from advisor_worker.errors import GenerationTimeout, InvalidOutput
from advisor_worker.heartbeat import Heartbeat
from advisor_worker.provider import LoadedVariant, ModelProvider
from advisor_worker.watchdog import Watchdog
from jobs.advisors import get_persona
from jobs.analysis import SCHEMA_VERSION, Analysis, GeneratedAnalysis, generation_schema
from jobs.contracts import AnalyzeRequest, ErrorKind
from jobs.errors import InvalidImage, UnknownAdvisor, UnsupportedFormat
from jobs.images import (
    PATH_PREFIX,
    STORED_PREFIX,
    Limits,
    Prepared,
    image_tokens,
    prepare,
    read_path,
)
from jobs.repository import ModelInput, Outcome, Repository, StartOutcome
from jobs.settings import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")

PROGRESS_EVERY_SECONDS = 1.0
# Database retries give up this long before the hard limit, so the task ends on its own terms.
RETRY_MARGIN_SECONDS = 1.0


class BadRequest(Exception):
    """A job input problem that fails the job at once (no retry)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class WorkerRuntime:
    """Everything one worker process needs to serve its variant."""

    settings: Settings
    repo: Repository
    provider: ModelProvider
    loaded: LoadedVariant
    heartbeat: Heartbeat
    # The hard time limit; None (tests, `check`) leaves only the soft one.
    watchdog: Watchdog | None = None
    _retry_until: float = field(default=0.0, init=False, repr=False)

    @property
    def worker(self) -> str:
        return self.heartbeat.worker

    @property
    def limits(self) -> Limits:
        return Limits(self.settings.max_image_bytes, self.settings.max_image_pixels)

    def handle(self, payload: Any) -> str:
        """Process one message and say what happened; bad input fails the job, never the worker."""
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        with self._armed(str(job_id)) as deadline:
            self._retry_until = deadline - RETRY_MARGIN_SECONDS
            return self._handle(payload)

    @contextmanager
    def _armed(self, label: str) -> Iterator[float]:
        if self.watchdog is None:
            yield time.monotonic() + self.settings.task_time_limit
            return
        with self.watchdog.armed(label) as deadline:
            yield deadline

    def _db(self, what: str, fn: Callable[[], T]) -> T:
        """A repository call that waits out a database outage until just before the hard limit."""
        return call_with_backoff(fn, what=what, deadline=self._retry_until)

    def _handle(self, payload: Any) -> str:
        try:
            request = AnalyzeRequest.model_validate(payload)
        except ValidationError as exc:
            return self._reject_malformed(payload, exc)
        job_id = request.job_id
        if request.variant != self.loaded.variant:
            logger.warning(
                "Job %s is for variant %r, not %r: dropped",
                job_id,
                request.variant,
                self.loaded.variant,
            )
            return "wrong_queue"
        outcome = self._db(
            f"Starting job {job_id}",
            lambda: self.repo.start(
                job_id,
                self.worker,
                lease_seconds=self.settings.worker_live_window,
                max_attempts=self.settings.max_attempts,
                # Checked inside the same UPDATE: a drain to base between read and write can't
                # slip in.
                variant=request.variant,
            ),
        )
        if outcome is not StartOutcome.STARTED:
            logger.info("Job %s not started: %s", job_id, outcome.value)
            return outcome.value
        self._db(
            f"Recording the variant of job {job_id}",
            lambda: self.repo.attach_variant_identity(
                job_id, self.worker, self.loaded.base_model, self.loaded.adapter_fingerprint
            ),
        )
        self._db(
            f"Recording the queue wait of job {job_id}",
            lambda: self.repo.set_queue_wait(job_id, self.worker),
        )
        self.heartbeat.current_job, self.heartbeat.current_tokens = job_id, 0
        try:
            return self._run(job_id, request)
        finally:
            self.heartbeat.current_job = None
            try:
                self.repo.count_done(self.worker)
            except SQLAlchemyError as exc:
                # A statistic only; it must not hide how the job itself ended.
                logger.warning("Could not count job %s as done: %s", job_id, type(exc).__name__)

    def _run(self, job_id: str, request: AnalyzeRequest) -> str:
        try:
            data, name = self._image_bytes(request.image_ref)
            prepared = prepare(data, self.limits, self.loaded.geometry, name=name)
            persona = get_persona(request.advisor)
        except UnsupportedFormat as exc:
            return self._fail(job_id, ErrorKind.UNSUPPORTED_FORMAT, str(exc))
        except InvalidImage as exc:
            return self._fail(job_id, ErrorKind.INVALID_IMAGE, str(exc))
        except UnknownAdvisor as exc:
            return self._fail(job_id, ErrorKind.UNKNOWN_ADVISOR, str(exc))
        except BadRequest as exc:
            return self._fail(job_id, exc.kind, str(exc))
        system = prompts.system_prompt(persona)
        with_capture = self.settings.prompt_capture
        user = prompts.user_prompt(prepared.photo.capture if with_capture else None)
        self._record_input(job_id, prepared, prompts.prompt_version(with_capture), system, user)
        deadline = time.monotonic() + self.settings.soft_time_limit
        last = [0.0]

        def on_progress(tokens: int) -> None:
            self.heartbeat.current_tokens = tokens
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_SECONDS:
                last[0] = now
                try:
                    self.repo.record_progress(
                        job_id, self.worker, tokens, lease_seconds=self.settings.worker_live_window
                    )
                except SQLAlchemyError as exc:
                    # Progress is advisory: a database blip must not abort the generation.
                    logger.warning("Progress of job %s not recorded: %s", job_id,
                                   type(exc).__name__)  # fmt: skip

        started = time.perf_counter()
        try:
            result = self.provider.generate(
                prepared.image,
                system,
                user,
                schema=generation_schema(self.settings.text_limit),
                max_tokens=self.settings.max_output_tokens,
                temperature=self.settings.temperature,
                seed=_seed_for(job_id),
                on_progress=on_progress,
                should_stop=lambda: time.monotonic() > deadline,
            )
        except GenerationTimeout as exc:
            message = (
                f"Soft time limit of {self.settings.soft_time_limit}s reached: {exc}; the partial "
                "output is kept in raw_output. Raise ADVISOR_TASK_TIME_LIMIT or lower "
                "ADVISOR_MAX_OUTPUT_TOKENS"
            )
            return self._fail(
                job_id, ErrorKind.TIMEOUT, message, raw_output=exc.partial,
                output_tokens=exc.output_tokens, inference_ms=_ms_since(started),
            )  # fmt: skip
        inference_ms = _ms_since(started)
        try:
            analysis = parse_analysis(
                result.text, result.finish_reason, self.settings.max_output_tokens
            )
        except InvalidOutput as exc:
            return self._fail(
                job_id, ErrorKind.INVALID_OUTPUT, str(exc), raw_output=result.text,
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
            lambda: self.repo.succeed(job_id, self.worker, outcome),
        )
        if not recorded:
            return self._lost(job_id, "succeeded")
        return "succeeded"

    def _record_input(
        self, job_id: str, prepared: Prepared, version: str, system: str, user: str
    ) -> None:
        """Store what the model gets; with ADVISOR_MODEL_INPUT_DIR, also its pixels and prompt."""
        width, height = prepared.image.size
        model_input = ModelInput(
            prepared.photo.to_dict(), version, width, height,
            image_tokens(width, height, self.loaded.geometry),
        )  # fmt: skip
        self._db(
            f"Recording the model input of job {job_id}",
            lambda: self.repo.attach_model_input(job_id, self.worker, model_input),
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

    def _fail(self, job_id: str, kind: ErrorKind, message: str, **details: Any) -> str:
        """Record a failure, waiting out a database outage; returns the error kind."""
        recorded = self._db(
            f"Recording the failure of job {job_id}",
            lambda: self.repo.fail(job_id, kind, message, worker=self.worker, **details),
        )
        return kind.value if recorded else self._lost(job_id, kind.value)

    def _lost(self, job_id: str, result: str) -> str:
        # The guarded write refused: the lease expired and the job went elsewhere (or finished).
        logger.warning(
            "Job %s %s here but was no longer held by %s (lease lost); outcome discarded, "
            "the job's current holder decides it",
            job_id,
            result,
            self.worker,
        )
        return "lost_lease"

    def _image_bytes(self, ref: str) -> tuple[bytes, str | None]:
        """The image's bytes, and its file name when it has one (it helps tell RAW files)."""
        if ref.startswith(STORED_PREFIX):
            data = self.repo.image_bytes(ref.removeprefix(STORED_PREFIX))
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

    def _reject_malformed(self, payload: Any, exc: ValidationError) -> str:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors()
        )
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        logger.error("Malformed analyze payload (job %s): %s", job_id, problems)
        if isinstance(job_id, str) and job_id:
            self.record_malformed(job_id, problems)
        return "malformed"

    def record_malformed(self, job_id: str, problem: str) -> None:
        """Fail the job a refused message names, so its row says what happened."""
        message = f"Malformed task payload: {problem}"
        recorded = self._db(
            f"Recording the malformed payload of job {job_id}",
            lambda: self.repo.fail(job_id, ErrorKind.INVALID_REQUEST, message),
        )
        if not recorded:
            logger.error("Job %s of the malformed payload is unknown or already final", job_id)


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
