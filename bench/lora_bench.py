"""Load time and decode speed of base, unfused-LoRA and fused-LoRA serving on random Qwen3-VL.

Usage: python bench/lora_bench.py [--sizes tiny medium] [--tokens N] [--rank R] [--rounds N]
Each (size, mode) loads a fresh model in this process, as a worker does: mlx_vlm.load, fp32 on
the CPU, then the adapter verified and applied. Decoding is greedy with EOS masked, so every
run produces exactly --tokens tokens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from advisor_worker import blas

# OpenBLAS must be in place before mlx.core is imported (see advisor_worker/blas.py).
blas.load_openblas()
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mlx.core as mx  # noqa: E402
from mlx_vlm import load, stream_generate  # noqa: E402

from advisor_worker import generation, lora  # noqa: E402
from advisor_worker.adapter_maker import write_random_adapter  # noqa: E402
from advisor_worker.tiny_model import build_tiny_model, parameter_count  # noqa: E402

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODES = ("base", "unfused", "fused")


def load_variant(model_dir: Path, adapter: Path, mode: str) -> tuple[Any, Any, float, float]:
    """(model, processor, load seconds, of which adapter seconds)."""
    started = time.perf_counter()
    model, processor = load(str(model_dir))
    if not mx.metal.is_available():
        model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    adapter_seconds = 0.0
    if mode != "base":
        t0 = time.perf_counter()
        lora.verify_and_apply(model, processor, adapter, base_model=str(model_dir), serving=mode)
        adapter_seconds = time.perf_counter() - t0
    return model, processor, time.perf_counter() - started, adapter_seconds


def decode_rate(model: Any, processor: Any, tokens: int, eos: list[int]) -> tuple[float, float]:
    """(decode tokens/s, prefill tokens/s) of one greedy generation of exactly `tokens` tokens."""
    prompt = generation.build_prompt(model, processor, "You are a critic.", "Describe it.")
    banned = mx.array(eos)

    def no_eos(_: mx.array, logits: mx.array) -> mx.array:
        return logits.at[..., banned].add(-1e9)

    last = None
    for last in stream_generate(  # noqa: B007 - only the final report matters
        model,
        processor,
        prompt,
        image=[generation.probe_image()],  # type: ignore[arg-type]
        max_tokens=tokens,
        temperature=0.0,
        logits_processors=[no_eos],
    ):
        pass
    assert last is not None and last.generation_tokens == tokens, last
    return float(last.generation_tps), float(last.prompt_tps)


def bench_size(
    size: str, workdir: Path, tokens: int, rank: int, repeats: int, rounds: int
) -> list[str]:
    model_dir = workdir / f"model-{size}"
    if not (model_dir / "model.safetensors").exists():
        t0 = time.perf_counter()
        build_tiny_model(model_dir, seed=0, size=size)
        print(f"built {size} in {time.perf_counter() - t0:.1f} s")
    adapter = write_random_adapter(
        model_dir,
        workdir / f"adapter-{size}",
        fmt="peft",
        rank=rank,
        alpha=2 * rank,
        targets=TARGETS,
    )
    params = parameter_count(model_dir)
    results: dict[str, list[tuple[float, float, float, float]]] = {mode: [] for mode in MODES}
    # Rounds interleave the modes, so drift on a shared machine hits them all alike.
    for _ in range(rounds):
        for mode in MODES:
            model, processor, load_s, adapter_s = load_variant(model_dir, adapter, mode)
            tok = processor.tokenizer
            eos = [tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
            decode_rate(model, processor, 4, eos)  # JIT warm-up
            for _ in range(repeats):
                decode, prefill = decode_rate(model, processor, tokens, eos)
                results[mode].append((load_s, adapter_s, decode, prefill))
            del model, processor
    rows = []
    for mode, runs in results.items():
        load_s, adapter_s, decode, prefill = (
            statistics.median(col) for col in zip(*runs, strict=True)
        )
        low, high = min(r[2] for r in runs), max(r[2] for r in runs)
        rows.append(
            f"| {size} ({params / 1e6:.1f}M) | {mode} | {load_s:.2f} | {adapter_s:.2f} "
            f"| {decode:.1f} ({low:.1f}-{high:.1f}) | {prefill:.0f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "medium"])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="generations per load")
    parser.add_argument("--rounds", type=int, default=2, help="loads per mode, interleaved")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lora-bench-"))
    runtime = blas.describe_runtime()
    print(f"runtime: {runtime}")
    print(f"adapter: PEFT, rank {args.rank}, targets {', '.join(TARGETS)}, every layer")
    header = (
        "| model | mode | load s | of which adapter s | decode tok/s (min-max) | prefill tok/s |"
    )
    print(header + "\n|---|---|---|---|---|---|")
    rows = []
    for size in args.sizes:
        rows += bench_size(size, workdir, args.tokens, args.rank, args.repeats, args.rounds)
    print("\n" + header + "\n|---|---|---|---|---|---|\n" + "\n".join(rows))
    mx.clear_streams()


if __name__ == "__main__":
    main()
