"""A batch row's per-step costs at Qwen's vocabulary on a CPU, each against its baseline.

`python -m bench.row_costs [--repeats N]` prints a markdown section for docs/benchmarks.md:
- the grammar mask: `mx.where` over the unpacked bits (the baseline, kept here) against the
  worker's additive bias (`apply_token_bitmask`);
- the sampler's top-k: one `argpartition` of the whole row (the baseline) against the
  worker's exact two-stage pick (`top_k_ids`);
- eight seeded jobs at B=4 on the tiny model, in a fresh process each, with one OpenBLAS
  thread against the default pool (one per core): CPU per output token, wall, and whether
  the tokens were the same. Interleaved, so both sides see the same machine.
CPU time (process_time) is the figure: on a shared two-core machine it is what the other
processes pay for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REAL_VOCAB = 151_936
TOP_K = 20  # Qwen3-VL's generation_config
JOBS, SLOTS, TEXT_LIMIT = 8, 4, 48

_CHILD = """
import json, sys, time
import numpy as np
from PIL import Image
from advisor_worker.blas import load_openblas
load_openblas()
from mlx_vlm import load
from advisor_worker import prompts
from advisor_worker.batching import BatchScheduler, GenerationJob
from jobs.advisors import get_persona
from jobs.analysis import generation_schema
model, processor = load(sys.argv[1])
slots, text_limit, jobs = (int(a) for a in sys.argv[2:5])
persona = get_persona("ansel")
def run(n):
    scheduler = BatchScheduler(model, processor, slots=slots)
    tickets = [scheduler.submit(GenerationJob(
        f"job-{i}", Image.fromarray(np.random.default_rng(i).integers(0, 256, (192, 288, 3),
        dtype=np.uint8)), prompts.system_prompt(persona), prompts.user_prompt(None),
        generation_schema(text_limit), max_tokens=3000, temperature=0.2, seed=1000 + i))
        for i in range(n)]
    scheduler.stop()
    cpu, wall = time.process_time(), time.perf_counter()
    scheduler.run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu, wall, [t.result() for t in tickets]
run(1)  # the tokenizer's grammar view and the schema, built once
cpu, wall, results = run(jobs)
print(json.dumps({"cpu": cpu, "wall": wall, "texts": [r.text for r in results],
                  "tokens": sum(r.output_tokens for r in results)}))
"""


def cpu_ms(fn: Callable[[], Any], calls: int) -> float:
    import mlx.core as mx

    mx.eval(fn())
    started = time.process_time()
    for _ in range(calls):
        mx.eval(fn())
    return (time.process_time() - started) / calls * 1e3


def where_mask(logits: Any, bitmask: Any) -> Any:
    """The baseline: the mask's bits unpacked on the device, then `mx.where`."""
    import mlx.core as mx

    bits = mx.right_shift(bitmask[:, :, None], mx.arange(32, dtype=mx.int32)) & 1
    allowed = bits.reshape(bitmask.shape[0], -1).astype(mx.bool_)
    vocab = logits.shape[-1]
    allowed = mx.pad(allowed, [(0, 0), (0, max(0, vocab - allowed.shape[-1]))])[:, :vocab]
    return mx.where(allowed, logits, mx.array(-mx.inf, dtype=logits.dtype))


def row_op_rows(repeats: int) -> list[list[str]]:
    import mlx.core as mx
    import numpy as np

    from advisor_worker.sampling import top_k_ids
    from advisor_worker.structured import apply_token_bitmask

    rng = np.random.default_rng(0)
    logits = mx.array(rng.standard_normal((1, REAL_VOCAB)).astype(np.float32))
    packed = rng.integers(-(2**31), 2**31, size=(1, (151_669 + 31) // 32), dtype=np.int64)
    packed = packed.astype(np.int32)
    device_mask = mx.array(packed)
    assert np.array_equal(
        np.array(where_mask(logits, device_mask)), np.array(apply_token_bitmask(logits, packed))
    )
    pairs = {
        "grammar mask": (lambda: where_mask(logits, device_mask),
                         lambda: apply_token_bitmask(logits, packed)),
        "top-20 of the row": (lambda: mx.argpartition(-logits, kth=TOP_K - 1, axis=-1)[..., :TOP_K],
                              lambda: top_k_ids(logits, TOP_K)),
    }  # fmt: skip
    rows = []
    for name, (baseline, ours) in pairs.items():
        base, new = [], []
        for _ in range(repeats):
            base.append(cpu_ms(baseline, 200))
            new.append(cpu_ms(ours, 200))
        b, n = statistics.median(base), statistics.median(new)
        rows.append([name, f"{b:.3f}", f"{n:.3f}", f"{n / b:.2f}"])
    return rows


def child(model_dir: Path, threads: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if threads is not None:
        env["OPENBLAS_NUM_THREADS"] = threads
    argv = [sys.executable, "-c", _CHILD, str(model_dir), str(SLOTS), str(TEXT_LIMIT), str(JOBS)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.row_costs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from advisor_worker.devtools.tiny_model import build_tiny_model

    load = os.getloadavg()[0]
    rows = row_op_rows(args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "tiny", seed=0)
        runs: dict[str, list[dict[str, Any]]] = {"1": [], "default": []}
        for repeat in range(args.repeats):
            order = ["1", "default"] if repeat % 2 == 0 else ["default", "1"]
            for threads in order:
                runs[threads].append(child(model_dir, threads if threads == "1" else None))
    one, pool = runs["1"], runs["default"]
    same = all(r["texts"] == one[0]["texts"] for r in one + pool)
    per_token = {k: [r["cpu"] / r["tokens"] * 1e3 for r in v] for k, v in runs.items()}
    wall = {k: [r["wall"] for r in v] for k, v in runs.items()}
    print(f"_Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench.row_costs "
          f"--repeats {args.repeats}` on {platform.machine()}, {os.cpu_count()} cores, load "
          f"{load:.1f} at the start and {os.getloadavg()[0]:.1f} at the end._\n")  # fmt: skip
    print("| per row per step, 151,936 logits | baseline CPU ms | worker CPU ms | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"\n{JOBS} seeded jobs at B={SLOTS} (tiny model, text limit {TEXT_LIMIT}, "
        f"{one[0]['tokens']} output tokens), medians of {args.repeats}:\n"
    )
    print("| OpenBLAS threads | CPU ms / output token | wall s |")
    print("|---|---|---|")
    for label, key in (("default (one per core)", "default"), ("1", "1")):
        print(f"| {label} | {statistics.median(per_token[key]):.2f} | "
              f"{statistics.median(wall[key]):.2f} |")  # fmt: skip
    ratio = statistics.median(per_token["1"]) / statistics.median(per_token["default"])
    print(
        f"\nCPU per token, one thread / default: {ratio:.2f}; the same texts in every run: "
        f"{'yes' if same else 'NO'}."
    )


if __name__ == "__main__":
    main()
