"""Grammar-mask costs at Qwen's vocabulary: llguidance's fills, the mask's apply, the overlap."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import llguidance
import llguidance.numpy
import mlx.core as mx
from mlx_vlm import load

from advisor_worker.structured import apply_token_bitmask, json_schema_constraint
from bench.decoding import REAL_VOCAB
from jobs.analysis import generation_schema

__all__ = ["async_overlap_ms", "mask_step_ms"]


def mask_step_ms(model_dir: Path, rows: int, steps: int = 50) -> tuple[float, float, float]:
    """(llguidance fill ms for `rows` matchers one by one, in parallel, mask apply ms at 152k)."""
    _model, processor = load(str(model_dir))
    constraint = json_schema_constraint(processor.tokenizer, generation_schema(16))
    matchers = [llguidance.LLMatcher(constraint.llg_tokenizer, constraint.grammar)
                for _ in range(rows)]  # fmt: skip
    bitmask = llguidance.numpy.allocate_token_bitmask(rows, constraint.llg_tokenizer.vocab_size)
    started = time.perf_counter()
    for _ in range(steps):
        for i, matcher in enumerate(matchers):
            llguidance.numpy.fill_next_token_bitmask(matcher, bitmask, i)
    serial = (time.perf_counter() - started) / steps * 1e3
    executor = llguidance.LLExecutor()
    pairs = [(m, i) for i, m in enumerate(matchers)]
    started = time.perf_counter()
    for _ in range(steps):
        llguidance.numpy.fill_next_token_bitmask_par(executor, pairs, bitmask)
    parallel = (time.perf_counter() - started) / steps * 1e3
    logits = mx.random.normal((1, REAL_VOCAB))
    words = mx.random.randint(-(2**31), 2**31 - 1, (1, (REAL_VOCAB + 31) // 32), dtype=mx.int32)
    mx.eval(logits, words, apply_token_bitmask(logits, words))
    started = time.perf_counter()
    for _ in range(steps):
        mx.eval(*[apply_token_bitmask(logits, words) for _ in range(rows)])
    apply = (time.perf_counter() - started) / steps * 1e3
    return serial, parallel, apply


def async_overlap_ms(cpu_ms: float = 80.0, repeats: int = 9) -> tuple[float, float, float, float]:
    """The mechanism alone: (forward, CPU work, both in turn, both overlapped) medians in ms.

    A (8, 1024) x (1024, 8192) matmul stands for a step's forward and a busy loop on this
    thread for the masks; overlapped starts the matmul with mx.async_eval first.
    """
    a, w = mx.random.normal((8, 1024)), mx.random.normal((1024, 8192))
    mx.eval(a, w)

    def busy() -> None:
        end = time.perf_counter() + cpu_ms / 1e3
        while time.perf_counter() < end:
            pass

    def timed(fn: Any) -> float:
        started = time.perf_counter()
        fn()
        return (time.perf_counter() - started) * 1e3

    def in_turn() -> None:
        y = (a @ w).max(axis=-1)
        busy()
        mx.eval(y)

    def overlapped() -> None:
        y = (a @ w).max(axis=-1)
        mx.async_eval(y)
        busy()
        mx.eval(y)

    samples: list[list[float]] = [[], [], [], []]
    for _ in range(repeats):
        for sink, fn in zip(samples, [lambda: mx.eval((a @ w).max(axis=-1)), busy, in_turn,
                                      overlapped], strict=True):  # fmt: skip
            sink.append(timed(fn))
    forward, cpu, serial, both = (statistics.median(v) for v in samples)
    return forward, cpu, serial, both
