"""One started analyze job's run: load the image, generate, validate, record the outcome."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from advisor_worker import prompts
from advisor_worker.backoff import call_with_backoff
from advisor_worker.batching import GenerationJob
from advisor_worker.errors import (
    GenerationCancelled,
    GenerationTimeout,
    InvalidOutput,
    WorkerError,
)
from advisor_worker.scope import Progress
from jobs.advisors import get_persona
from jobs.analysis import SCHEMA_VERSION, Analysis, GeneratedAnalysis, generation_schema
from jobs.contracts import ErrorKind
from jobs.errors import InvalidImage, UnknownAdvisor, UnsupportedFormat
from jobs.incidents import IncidentKind, incident
from jobs.settings import Settings
from photos.intake import Prepared, image_tokens, prepare
from store.lifecycle import ModelInput, Outcome
from store.models import Job

if TYPE_CHECKING:
    from advisor_worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)
T = TypeVar("T")


class BadRequest(Exception):
    """A job input problem that fails the job at once (no retry)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class AnalyzeJob:
    """One started job's run: load the image, generate, validate, record; state is its own."""

    runtime: WorkerRuntime
    row: Job  # as started: the row, not the message, says which image and advisor
    retry_until: float
    soft_limit: float
    progress: Progress

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
        """The job's outcome; what it raises reaches the scope's catch-all (see failed())."""
        runtime, job_id, row = self.runtime, self.job_id, self.row
        try:
            data, name = runtime.image_bytes(row.image_ref, self.retry_until)
            check_digest(data, row)
            prepared = prepare(data, runtime.limits, runtime.loaded.geometry, name=name)
            persona = get_persona(row.advisor)
        except UnsupportedFormat as exc:
            return self.fail(ErrorKind.UNSUPPORTED_FORMAT, str(exc))
        except InvalidImage as exc:
            return self.fail(ErrorKind.INVALID_IMAGE, str(exc))
        except UnknownAdvisor as exc:
            return self.fail(ErrorKind.UNKNOWN_ADVISOR, str(exc))
        except BadRequest as exc:
            return self.fail(exc.kind, str(exc))
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
            return self.fail(
                ErrorKind.TIMEOUT, message, raw_output=exc.partial,
                output_tokens=exc.output_tokens, inference_ms=_ms_since(started),
            )  # fmt: skip
        except InvalidOutput as exc:
            return self.fail(ErrorKind.INVALID_OUTPUT, str(exc), inference_ms=_ms_since(started))
        except WorkerError as exc:
            # Its text carries the library's own message: the log keeps it under the reference.
            found = incident(exc, f"job {self.job_id}", kind=IncidentKind.INTERNAL)
            return self.fail(ErrorKind.INTERNAL, found.text, inference_ms=_ms_since(started))
        inference_ms = _ms_since(started)
        try:
            analysis = parse_analysis(
                result.text, result.finish_reason, self.settings.max_output_tokens
            )
        except InvalidOutput as exc:
            return self.fail(
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

    def fail(self, kind: ErrorKind, message: str, **details: Any) -> str:
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
