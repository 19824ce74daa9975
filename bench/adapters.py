"""LoRA serving: load time and decode tokens/s of base, unfused-adapter and fused-adapter models."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlx.core as mx

from advisor_worker import lora
from advisor_worker.devtools.adapter_maker import write_random_adapter
from bench import models
from bench.decoding import free_rate, load_fp32
from bench.stats import Figure, Goal, Section, ratios, table

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODES = ("base", "unfused", "fused")


def load_variant(model_dir: Path, adapter: Path, mode: str) -> tuple[Any, Any, float, float]:
    """(model, processor, load seconds in all, of which adapter verify + apply seconds)."""
    started = time.perf_counter()
    model, processor = load_fp32(model_dir)
    adapter_seconds = 0.0
    if mode != "base":
        t0 = time.perf_counter()
        lora.verify_and_apply(model, processor, adapter, base_model=str(model_dir), serving=mode)
        adapter_seconds = time.perf_counter() - t0
    return model, processor, time.perf_counter() - started, adapter_seconds


def run(
    workdir: Path, sizes: list[str], *, tokens: int, rank: int, rounds: int, loads: int
) -> Section:
    from advisor_worker.generation import probe_image

    section = Section(
        "LoRA adapters",
        f"A random PEFT adapter (rank {rank}, alpha {2 * rank}, on {', '.join(TARGETS)} of every "
        "language-model layer), verified and applied as a worker does (`lora.verify_and_apply`: "
        f"probe logits before and after). Each mode is loaded fresh {loads}x, interleaved "
        "(load time). Then the three models, all in memory, take turns: each round decodes "
        f"{tokens} tokens greedily (EOS masked) on each, in a rotating order, so a busy moment "
        f"of the shared machine hits all three alike; ratios are paired per round ({rounds} "
        "rounds).",
    )
    image = probe_image()
    rows = []
    for size in sizes:
        model_dir = models.ensure_model(workdir, size)
        adapter = write_random_adapter(
            model_dir, workdir / f"adapter-{size}", fmt="peft", rank=rank, alpha=2 * rank,
            targets=TARGETS,
        )  # fmt: skip
        load_s: dict[str, list[float]] = {m: [] for m in MODES}
        adapter_s: dict[str, list[float]] = {m: [] for m in MODES}
        rate: dict[str, list[float]] = {m: [] for m in MODES}
        loaded: dict[str, tuple[Any, Any]] = {}
        for _ in range(loads):
            for mode in MODES:
                loaded.pop(mode, None)
                mx.clear_cache()
                model, processor, seconds, applied = load_variant(model_dir, adapter, mode)
                load_s[mode].append(seconds)
                adapter_s[mode].append(applied)
                loaded[mode] = (model, processor)
        for model, processor in loaded.values():
            free_rate(model, processor, image, 4)  # JIT warm-up
        for round_no in range(rounds):
            shift = round_no % len(MODES)
            for mode in MODES[shift:] + MODES[:shift]:
                model, processor = loaded[mode]
                rate[mode].append(free_rate(model, processor, image, tokens))
        loaded.clear()
        mx.clear_cache()
        label = models.label(model_dir, size)
        for mode in MODES:
            rows.append([
                label, mode, Figure.of(load_s[mode]).show(2), Figure.of(adapter_s[mode]).show(2),
                Figure.of(rate[mode]).show(1), ratios(rate[mode], rate["base"]).show(3),
            ])  # fmt: skip
        section.goals.append(
            Goal(
                f"fused / base tokens/s ({label})",
                ratios(rate["fused"], rate["base"]),
                0.98,
                at_least=True,
                why="a fused model has the base model's exact shapes, so any gap is noise",
                fix="rerun on a quiet machine",
            )
        )
    section.tables.append(
        table(
            ["model", "mode", "load s", "of which adapter s", "decode tok/s", "tok/s vs base"], rows
        )  # fmt: skip
    )
    section.notes.append(
        "Unfused serving adds two rank-r matmuls per adapted projection per token; fusing folds "
        "`scale * (A @ B)^T` into each weight once at load, so decoding costs what the base "
        "model's does, at the price of the fuse time at load."
    )
    return section
