"""Constrained decoding: tokens/s with the Analysis schema constraint vs free decoding."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_vlm import load, stream_generate

from advisor_worker import batching, generation, prompts
from advisor_worker.structured import apply_token_bitmask
from bench import models
from bench.serving import ADVISOR, TEXT_LIMIT
from bench.stats import Figure, Goal, Section, ratios, table
from jobs.advisors import get_persona
from jobs.analysis import generation_schema
from photos.intake import Limits, ModelGeometry, prepare
from producers.commands.demo import photo

# Qwen3-VL's real vocabulary: the mask's cost grows with it, and the random models have ~1k.
REAL_VOCAB = 151_936
# Upstream's measured decode rate of the 4-bit 4B model on an M1 Pro.
UPSTREAM_TOKENS_PER_SECOND = 38.0


def load_fp32(model_dir: Path) -> tuple[Any, Any]:
    model, processor = load(str(model_dir))
    model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    return model, processor


def free_rate(model: Any, processor: Any, image: Any, tokens: int) -> float:
    """Decode tokens/s of a free generation of exactly `tokens` tokens (EOS masked), greedy."""
    persona = get_persona(ADVISOR)
    prompt = generation.build_prompt(
        model, processor, prompts.system_prompt(persona), prompts.user_prompt()
    )
    tok = processor.tokenizer
    banned = mx.array([tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")])

    def no_eos(_: mx.array, logits: mx.array) -> mx.array:
        return logits.at[..., banned].add(-1e9)

    last = None
    for last in stream_generate(  # noqa: B007 - only the final report matters
        model, processor, prompt, image=[image], max_tokens=tokens, temperature=0.0,
        logits_processors=[no_eos],
    ):  # fmt: skip
        pass
    if last is None or last.generation_tokens != tokens:
        raise RuntimeError(f"free decoding produced {last and last.generation_tokens} tokens")
    return float(last.generation_tps)


def constrained_rate(model: Any, processor: Any, image: Any) -> tuple[float, int]:
    persona = get_persona(ADVISOR)
    result = batching.generate_json(
        model, processor, image, prompts.system_prompt(persona), prompts.user_prompt(),
        generation_schema(TEXT_LIMIT), max_tokens=1800, temperature=0.0, seed=0,
    )  # fmt: skip
    return result.tokens_per_second, result.output_tokens


def mask_ms(vocab: int, calls: int = 200) -> float:
    """Milliseconds per application of the portable token mask to one step's logits."""
    logits = mx.random.normal((vocab,))
    words = (vocab + 31) // 32
    bitmask = mx.random.randint(-(2**31), 2**31 - 1, (1, words), dtype=mx.int32)
    mx.eval(logits, bitmask)
    mx.eval(apply_token_bitmask(logits, bitmask))
    started = time.perf_counter()
    for _ in range(calls):
        mx.eval(apply_token_bitmask(logits, bitmask))
    return (time.perf_counter() - started) / calls * 1e3


def run(workdir: Path, sizes: list[str], repeats: int) -> Section:
    section = Section(
        "Constrained decoding",
        "Decode tokens/s (prefill excluded, as mlx-vlm reports it) of the worker's call "
        "(`generate_json`: llguidance matcher + token mask every step, Analysis schema, text "
        f"limit {TEXT_LIMIT}) against a free greedy generation of the same number of tokens "
        "from the same prompt and image (EOS masked). Interleaved (which goes first alternates), "
        "paired per repeat.",
    )
    image = prepare(photo(0), Limits(25 * 1024 * 1024, 64_000_000), ModelGeometry(448 * 448)).image
    rows = []
    for size in sizes:
        model_dir = models.ensure_model(workdir, size)
        model, processor = load_fp32(model_dir)
        _, tokens = constrained_rate(model, processor, image)  # warm-up, and the length
        free_rate(model, processor, image, 4)
        with_constraint, without = [], []
        for repeat in range(repeats):
            if repeat % 2:  # alternate which goes first
                without.append(free_rate(model, processor, image, tokens))
            rate, n = constrained_rate(model, processor, image)
            if n != tokens:
                raise RuntimeError(f"greedy constrained output changed length: {n} != {tokens}")
            with_constraint.append(rate)
            if not repeat % 2:
                without.append(free_rate(model, processor, image, tokens))
        ratio = ratios(with_constraint, without)
        label = models.label(model_dir, size)
        rows.append([label, str(tokens), Figure.of(with_constraint).show(1),
                     Figure.of(without).show(1), ratio.show(3)])  # fmt: skip
        section.goals.append(
            Goal(
                f"constrained / free tokens/s ({label})",
                ratio,
                0.9,
                at_least=True,
                why="the per-token grammar step and mask are a fixed cost per token, large next "
                "to a tiny model's sub-millisecond forward pass",
                fix="compute the next mask on another thread while the forward pass runs, so "
                "it is free whenever the model's step is longer than the mask's (a real model's "
                "always is)",
            )
        )
        del model, processor
    section.tables.append(
        table(["model", "tokens", "constrained tok/s", "free tok/s", "constrained / free"], rows)
    )
    real = mask_ms(REAL_VOCAB)
    small = mask_ms(1018)
    step_ms = 1e3 / UPSTREAM_TOKENS_PER_SECOND
    section.notes.append(
        f"The random models have a 1,018-token vocabulary; the mask op costs {small:.3f} ms per "
        f"token there and {real:.3f} ms at Qwen3-VL's {REAL_VOCAB:,} tokens on this CPU. At "
        f"upstream's {UPSTREAM_TOKENS_PER_SECOND:.0f} tok/s ({step_ms:.1f} ms/token) that "
        f"mask alone would give a ratio of about {step_ms / (step_ms + real):.3f} (a "
        "projection, not a measurement: the llguidance matcher's own per-token time at the "
        "real vocabulary is not measured here, and on a Mac the mask runs as a Metal kernel)."
    )
    return section
