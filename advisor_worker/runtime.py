"""The analyze work: start the job, load the image, generate, validate, record the outcome."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from advisor_worker import prompts
from advisor_worker.errors import GenerationTimeout, InvalidOutput
from advisor_worker.heartbeat import Heartbeat
from advisor_worker.provider import LoadedVariant, ModelProvider
from jobs.advisors import get_persona
from jobs.analysis import SCHEMA_VERSION, Analysis, GeneratedAnalysis, generation_schema
from jobs.contracts import AnalyzeRequest, ErrorKind
from jobs.errors import InvalidImage, UnknownAdvisor
from jobs.images import PATH_PREFIX, STORED_PREFIX, Limits, load_for_model, read_path
from jobs.repository import Outcome, Repository, StartOutcome
from jobs.settings import Settings

logger = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 1.0


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

    @property
    def worker(self) -> str:
        return self.heartbeat.worker

    @property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(s.max_image_bytes, s.max_image_pixels, s.max_image_side)

    def handle(self, payload: dict[str, Any]) -> str:
        """Process one message and say what happened; bad input fails the job, never the worker."""
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
        outcome = self.repo.start(
            job_id,
            self.worker,
            lease_seconds=self.settings.worker_live_window,
            max_attempts=self.settings.max_attempts,
            # Checked inside the same UPDATE: a drain to base between read and write can't slip in.
            variant=request.variant,
        )
        if outcome is not StartOutcome.STARTED:
            logger.info("Job %s not started: %s", job_id, outcome.value)
            return outcome.value
        self.repo.attach_variant_identity(
            job_id, self.worker, self.loaded.base_model, self.loaded.adapter_fingerprint
        )
        self.repo.set_queue_wait(job_id, self.worker)
        self.heartbeat.current_job, self.heartbeat.current_tokens = job_id, 0
        try:
            return self._run(job_id, request)
        finally:
            self.heartbeat.current_job = None
            self.repo.count_done(self.worker)

    def _run(self, job_id: str, request: AnalyzeRequest) -> str:
        try:
            image = load_for_model(self._image_bytes(request.image_ref), self.limits)
            persona = get_persona(request.advisor)
        except InvalidImage as exc:
            self.repo.fail(job_id, ErrorKind.INVALID_IMAGE, str(exc), worker=self.worker)
            return ErrorKind.INVALID_IMAGE.value
        except UnknownAdvisor as exc:
            self.repo.fail(job_id, ErrorKind.UNKNOWN_ADVISOR, str(exc), worker=self.worker)
            return ErrorKind.UNKNOWN_ADVISOR.value
        except BadRequest as exc:
            self.repo.fail(job_id, exc.kind, str(exc), worker=self.worker)
            return exc.kind.value
        deadline = time.monotonic() + self.settings.soft_time_limit
        last = [0.0]

        def on_progress(tokens: int) -> None:
            self.heartbeat.current_tokens = tokens
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_SECONDS:
                last[0] = now
                self.repo.record_progress(
                    job_id, self.worker, tokens, lease_seconds=self.settings.worker_live_window
                )

        started = time.perf_counter()
        try:
            result = self.provider.generate(
                image,
                prompts.system_prompt(persona),
                prompts.user_prompt(),
                schema=generation_schema(self.settings.text_limit),
                max_tokens=self.settings.max_output_tokens,
                temperature=self.settings.temperature,
                seed=_seed_for(job_id),
                on_progress=on_progress,
                should_stop=lambda: time.monotonic() > deadline,
            )
        except GenerationTimeout as exc:
            self.repo.fail(
                job_id, ErrorKind.TIMEOUT, str(exc), worker=self.worker,
                raw_output=exc.partial, output_tokens=exc.output_tokens,
                inference_ms=_ms_since(started),
            )  # fmt: skip
            return ErrorKind.TIMEOUT.value
        inference_ms = _ms_since(started)
        try:
            analysis = parse_analysis(
                result.text, result.finish_reason, self.settings.max_output_tokens
            )
        except InvalidOutput as exc:
            self.repo.fail(
                job_id, ErrorKind.INVALID_OUTPUT, str(exc), worker=self.worker,
                raw_output=result.text, output_tokens=result.output_tokens,
                inference_ms=inference_ms,
            )  # fmt: skip
            return ErrorKind.INVALID_OUTPUT.value
        recorded = self.repo.succeed(
            job_id,
            self.worker,
            Outcome(
                llm_outputs=analysis.model_dump(mode="json"),
                raw_output=result.text,
                prompt_tokens=result.prompt_tokens,
                output_tokens=result.output_tokens,
                inference_ms=inference_ms,
                schema_version=SCHEMA_VERSION,
            ),
        )
        return "succeeded" if recorded else "lost_lease"

    def _image_bytes(self, ref: str) -> bytes:
        if ref.startswith(STORED_PREFIX):
            data = self.repo.image_bytes(ref.removeprefix(STORED_PREFIX))
            if data is None:
                raise InvalidImage(
                    f"Stored image {ref} is missing from the images table; resubmit it"
                )
            return data
        if ref.startswith(PATH_PREFIX):
            return read_path(ref.removeprefix(PATH_PREFIX), self.settings.image_roots, self.limits)
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
            self.repo.fail(job_id, ErrorKind.INVALID_REQUEST, f"Malformed task payload: {problems}")
        return "malformed"


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
