"""Continuous batching: every generation, alone or not, is a row of one batch on the MLX thread.

Requests come in through a queue and results go out through per-request futures, as in
mlx-lm's server. A job joins the running batch as soon as a slot is free and leaves when it
ends, so nobody waits for a batch to fill or for its slowest row. Each row carries its own
grammar state, token cap, seed, soft deadline and cancel flag. B=1 is a batch of one: there
is one decode path and one sampler, so a seeded job gives the same text whatever B and
whichever worker serves it.

Jobs that join together are prefilled together (one forward over their rows, with each
row's deepstack features: see advisor_worker.prefill), in chunks of `prefill_chunk` tokens
per row; mlx-vlm's BatchGenerator runs one decode step before each chunk, so decoding rows
wait at most one chunk for a joining job.
"""

from __future__ import annotations

import importlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

import mlx.nn as nn
from mlx_vlm.tokenizer_utils import make_streaming_detokenizer
from PIL import Image

from advisor_worker import decode_step, prefill
from advisor_worker.errors import GenerationCancelled, GenerationTimeout, WorkerError
from advisor_worker.generation import GenerationResult, embed_prompt
from advisor_worker.sampling import GuardedProcessor, GumbelSampling
from advisor_worker.structured import json_schema_constraint
from jobs.errors import summary

# `mlx_vlm.generate` is also a function re-exported by the package, so import the module.
_ar = importlib.import_module("mlx_vlm.generate.ar")
BatchGenerator = _ar.BatchGenerator
resolve_sampling_defaults = importlib.import_module(
    "mlx_vlm.generate.common"
).resolve_sampling_defaults

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_PREFILL_CHUNK", "BatchScheduler", "GenerationJob", "Ticket", "generate_json"]

# How long the idle MLX thread waits for a request before looking at its stop flag again.
IDLE_WAIT_SECONDS = 0.05
# Prompt tokens per row in one prefill step (ADVISOR_PREFILL_CHUNK's default).
DEFAULT_PREFILL_CHUNK = 256


@dataclass(frozen=True)
class GenerationJob:
    """One analysis's generation inputs; everything per job is here, nothing on the runtime."""

    job_id: str
    image: Image.Image
    system_prompt: str
    user_text: str
    schema: dict[str, Any]
    max_tokens: int
    temperature: float
    seed: int
    # time.monotonic() past which the row ends with GenerationTimeout (the soft limit).
    deadline: float | None = None


@dataclass
class Ticket:
    """A submitted job's handle: its result future, its live token count and its cancel flag."""

    job: GenerationJob
    future: Future[GenerationResult] = field(default_factory=Future)
    # Written by the MLX thread only; read by the heartbeat (an int store is atomic).
    tokens: int = 0
    # time.perf_counter() when the first output token came out (time to first token).
    first_token_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    # The soft deadline the MLX thread checks after every step; starts as the job's.
    deadline: float | None = None
    # Called on the MLX thread with the output token count after each token: keep it cheap.
    on_progress: Callable[[int], None] | None = None
    # Asked before decoding and after each step: True ends the row as a GenerationTimeout.
    should_stop: Callable[[], bool] | None = None

    def __post_init__(self) -> None:
        if self.deadline is None:
            self.deadline = self.job.deadline

    def result(self) -> GenerationResult:
        return self.future.result()


@dataclass
class _Row:
    ticket: Ticket
    prompt_tokens: int
    grammar: GuardedProcessor
    detokenizer: Any
    started: float
    pieces: list[str] = field(default_factory=list)
    tokens: int = 0

    def add(self, token: int, is_stop: bool) -> None:
        self.tokens += 1
        self.ticket.tokens = self.tokens
        if self.tokens == 1:
            self.ticket.first_token_at = time.perf_counter()
        if self.ticket.on_progress is not None:
            self.ticket.on_progress(self.tokens)
        if not is_stop:
            self.detokenizer.add_token(token)
            self.pieces.append(self.detokenizer.last_segment)

    def text(self) -> str:
        self.detokenizer.finalize()
        return "".join(self.pieces) + self.detokenizer.last_segment


class BatchScheduler:
    """Owns the MLX thread while it runs: admits, steps and finishes up to `slots` rows."""

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        *,
        slots: int,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        overlap_masks: bool = True,
        max_prefill_rows: int | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        if prefill_chunk < 1:
            raise ValueError("prefill_chunk must be at least 1")
        self.model = model
        self.processor = processor
        self.slots = slots
        self.prefill_chunk = prefill_chunk
        self.overlap_masks = overlap_masks
        # At most this many rows per prefill (None: every waiting row); 1 prefills one by one.
        self.max_prefill_rows = max_prefill_rows or slots
        self._on_idle = on_idle
        self._requests: queue.SimpleQueue[Ticket | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._active: dict[int, _Row] = {}
        self._generator: Any = None
        # Rows of each prefill batch started, in order (read by tests and benchmarks).
        self.prefill_batches: list[int] = []

    # -- any thread ------------------------------------------------------------------

    def submit(
        self,
        job: GenerationJob,
        *,
        cancel: threading.Event | None = None,
        on_progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Ticket:
        """Queue a job for the next free slot; wait on `ticket.result()`. `cancel`, when
        given, is the ticket's cancel flag (the caller's own, set from any thread)."""
        if self._stopping.is_set():
            raise WorkerError("The batch scheduler is stopping and takes no new work")
        ticket = Ticket(job, on_progress=on_progress, should_stop=should_stop)
        if cancel is not None:
            ticket.cancel = cancel
        self._requests.put(ticket)
        return ticket

    def stop(self) -> None:
        """Let running rows finish, then end `run()`; queued tickets still get served."""
        self._stopping.set()
        self._requests.put(None)

    @property
    def rows_in_use(self) -> int:
        return len(self._active)

    # -- the MLX thread --------------------------------------------------------------

    def run(self) -> None:
        """The MLX thread's loop; returns once stopped and every admitted row has ended."""
        waiting: list[Ticket] = []
        try:
            while True:
                self._collect(waiting, block=not self._active and not waiting)
                while waiting and len(self._active) < self.slots:
                    self._admit(waiting.pop(0))
                if self._active:
                    self._step()
                elif self._stopping.is_set() and not waiting and self._requests.empty():
                    return
        finally:
            for ticket in waiting:
                _settle(ticket, exc=WorkerError("The worker stopped before this job started"))
            for row in self._active.values():
                _settle(row.ticket, exc=WorkerError("The worker stopped mid-generation"))
            self._active.clear()
            if self._generator is not None:
                self._generator.close()
                self._generator = None

    def _collect(self, waiting: list[Ticket], *, block: bool) -> None:
        try:
            item = self._requests.get(timeout=IDLE_WAIT_SECONDS) if block else None
            if item is None and not block:
                item = self._requests.get_nowait()
            while True:
                if item is not None:
                    waiting.append(item)
                item = self._requests.get_nowait()
        except queue.Empty:
            if block and not waiting and self._on_idle is not None:
                self._on_idle()

    def _ensure_generator(self) -> Any:
        if self._generator is None:
            prefill.install()
            decode_step.install(self.model.language_model)
            self._generator = BatchGenerator(
                self.model.language_model,
                self.processor,
                completion_batch_size=self.slots,
                # Set before each step to the rows waiting for prefill (see _step).
                prefill_batch_size=1,
                prefill_step_size=self.prefill_chunk,
                compute_logprobs=False,
            )
        return self._generator

    def _admit(self, ticket: Ticket) -> None:
        job = ticket.job
        if ticket.cancel.is_set():
            _settle(ticket, exc=GenerationCancelled("Cancelled before decoding started", "", 0))
            return
        if _is_out_of_time(ticket, time.monotonic()):
            _settle(ticket, exc=GenerationTimeout("Time ran out before decoding started", "", 0))
            return
        try:
            input_ids, prompt_kwargs = embed_prompt(
                self.model, self.processor, job.image, job.system_prompt, job.user_text
            )
            grammar = GuardedProcessor(
                json_schema_constraint(self.processor.tokenizer, job.schema).new_processor(),
                overlap=self.overlap_masks,
            )
            processors: list[Any] = [grammar]
            if job.temperature > 0:
                _t, top_p, top_k = resolve_sampling_defaults(
                    getattr(self.model, "config", None), temperature=job.temperature
                )
                processors.append(GumbelSampling(job.temperature, top_p, top_k, job.seed))
            (uid,) = self._ensure_generator().insert(
                [input_ids],
                max_tokens=job.max_tokens,
                prompt_kwargs=[prompt_kwargs],
                logits_processors=[processors],
            )
        except Exception as exc:  # noqa: BLE001 - this job fails; the batch goes on
            reason = summary(exc, typed=True)
            logger.warning("Job %s could not join the batch: %s", job.job_id, reason)
            _settle(ticket, exc=WorkerError(f"Could not start generation: {reason}"))
            return
        row = _Row(
            ticket,
            prompt_tokens=len(input_ids),
            grammar=grammar,
            detokenizer=make_streaming_detokenizer(self.processor),
            started=time.perf_counter(),
        )
        grammar.budget = lambda: job.max_tokens - row.tokens - 2  # besides a step's 2 tokens
        self._active[uid] = row

    def _step(self) -> None:
        generator = self._ensure_generator()
        # Every row waiting for prefill joins one prefill batch. Upstream starts one only
        # when this many slots are free, which always holds: rows in use never exceed slots.
        pending = len(generator.unprocessed_prompts)
        generator.prefill_batch_size = max(1, min(pending, self.max_prefill_rows))
        try:
            _prompt_stats, responses = generator.next()
        except Exception as exc:  # noqa: BLE001 - a failed step ends this batch, not the worker
            logger.error("Batch step failed; ending its %d row(s): %s", len(self._active),
                         summary(exc, typed=True))  # fmt: skip
            reason = summary(exc, typed=True)
            for row in self._active.values():
                _settle(row.ticket, exc=WorkerError(f"Generation failed: {reason}"))
            self._active.clear()
            generator.close()
            self._generator = None
            return
        if len(generator.unprocessed_prompts) < pending:
            self.prefill_batches.append(pending - len(generator.unprocessed_prompts))
            logger.debug("Prefilling %d row(s) together", self.prefill_batches[-1])
        for response in responses:
            held = self._active.get(response.uid)
            if held is None:
                continue
            held.add(int(response.token), response.finish_reason == "stop")
            for token in held.grammar.take_fed():
                held.add(token, False)
            if response.finish_reason is not None:
                self._finish(response.uid, "stop" if response.finish_reason == "stop" else "length")
            elif held.tokens >= held.ticket.job.max_tokens:
                # Upstream counts steps, and a step that fed forced tokens wrote several.
                self._ensure_generator().remove(response.uid)
                self._finish(response.uid, "length")
        now = time.monotonic()
        for uid, row in list(self._active.items()):
            if row.grammar.error is not None:
                self._end(uid, _grammar_failure(row))
            elif row.ticket.cancel.is_set():
                self._end(uid, GenerationCancelled(
                    f"Cancelled after {row.tokens} output tokens", row.text(), row.tokens
                ))  # fmt: skip
            elif _is_out_of_time(row.ticket, now):
                self._end(uid, GenerationTimeout(
                    f"Time ran out after {row.tokens} output tokens "
                    f"({time.perf_counter() - row.started:.1f}s)", row.text(), row.tokens,
                ))  # fmt: skip

    def _finish(self, uid: int, reason: Literal["stop", "length"]) -> None:
        row = self._active.pop(uid)
        seconds = time.perf_counter() - row.started
        result = GenerationResult(
            text=row.text(),
            prompt_tokens=row.prompt_tokens,
            output_tokens=row.tokens,
            finish_reason=reason,
            seconds=seconds,
            tokens_per_second=row.tokens / seconds if seconds > 0 else 0.0,
        )
        _settle(row.ticket, result=result)

    def _end(self, uid: int, exc: BaseException) -> None:
        row = self._active.pop(uid)
        self._ensure_generator().remove(uid)
        _settle(row.ticket, exc=exc)


def generate_json(
    model: nn.Module,
    processor: Any,
    image: Image.Image,
    system_prompt: str,
    user_text: str,
    schema: dict[str, Any],
    *,
    max_tokens: int,
    temperature: float,
    seed: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> GenerationResult:
    """One constrained generation as a batch of one, run on this (the model's) thread.

    The worker's scheduler and sampler: the text a worker gives for the same seed. `image`
    is the model's input as intake made it; `temperature` is required so the checkpoint's
    generation_config cannot choose it. "length": `max_tokens` ran out before the JSON
    closed. When `should_stop` turns true (asked before decoding and after every step),
    GenerationTimeout carries the partial text out."""
    job = GenerationJob("generate_json", image, system_prompt, user_text, schema,
                        max_tokens, temperature, 0 if seed is None else seed)  # fmt: skip
    scheduler = BatchScheduler(model, processor, slots=1)
    ticket = scheduler.submit(job, on_progress=on_progress, should_stop=should_stop)
    scheduler.stop()
    scheduler.run()
    return ticket.result()


def _is_out_of_time(ticket: Ticket, now: float) -> bool:
    if ticket.deadline is not None and now > ticket.deadline:
        return True
    return ticket.should_stop is not None and ticket.should_stop()


def _grammar_failure(row: _Row) -> BaseException:
    error = row.grammar.error
    if isinstance(error, WorkerError):
        return error
    reason = summary(error, typed=True) if error is not None else "unknown"
    return WorkerError(f"Constrained decoding failed: {reason}")


def _settle(
    ticket: Ticket, *, result: GenerationResult | None = None, exc: BaseException | None = None
) -> None:
    if ticket.future.done():
        return
    if exc is not None:
        ticket.future.set_exception(exc)
    else:
        ticket.future.set_result(result)  # type: ignore[arg-type]
