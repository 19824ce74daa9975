"""The test suite's model against the real shape: what a cut of Qwen's vocabulary saves.

`python -m bench.test_model [--repeats N]` builds the tiny Qwen3-VL twice, with Qwen's whole
vocabulary (151,936 head rows, what the demo and every other benchmark use) and with its
first 8,192 ranks (8,320 rows, what the test suite uses: docs/testing.md), and runs in a fresh
process for each, interleaved: loading the model and processor, llguidance's view of the
tokenizer plus the schema's grammar, then test-sized critiques (text limit 16, as the
worker stacks of the suite write them) at B=1 and B=10 through the worker's scheduler. CPU
time (process_time, all threads) is the figure: on two shared cores it is what the suite's
wall time follows. Prints a markdown section for docs/benchmarks.md.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CUT = 8192
TEXT_LIMIT = 16
RUNS = ((1, 4), (10, 10))  # (B, jobs)

_CHILD = """
import json, sys, time
from advisor_worker.blas import load_openblas
load_openblas()
from mlx_vlm import load
from advisor_worker.batching import BatchScheduler, GenerationJob
from advisor_worker.devtools.workload import sample_photo
from advisor_worker.structured import json_schema_constraint
from jobs.analysis import generation_schema

model_dir, text_limit, runs = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
out = {}
started = time.process_time()
model, processor = load(model_dir)
out["load"] = time.process_time() - started
schema = generation_schema(text_limit)
started = time.process_time()
json_schema_constraint(processor.tokenizer, schema)
out["grammar"] = time.process_time() - started
for slots, jobs in runs:
    specs = [GenerationJob(f"job-{i}", sample_photo(i, (112, 84)), "You are a photo critic.",
                           "Critique this photo.", schema, 1500, 0.0, i) for i in range(jobs)]
    scheduler = BatchScheduler(model, processor, slots=slots)
    tickets = [scheduler.submit(spec) for spec in specs]
    scheduler.stop()
    started = time.process_time()
    scheduler.run()
    cpu = time.process_time() - started
    tokens = sum(t.result().output_tokens for t in tickets)
    out[f"B{slots}"] = {"cpu": cpu, "tokens": tokens, "jobs": jobs}
print(json.dumps(out))
"""


def child(model_dir: Path) -> dict[str, Any]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # as the suite runs every process
    argv = [sys.executable, "-c", _CHILD, str(model_dir), str(TEXT_LIMIT), json.dumps(RUNS)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.test_model")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from advisor_worker.devtools.tiny_model import build_tiny_model

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {
            "real": build_tiny_model(Path(tmp) / "real", seed=0),
            "cut": build_tiny_model(Path(tmp) / "cut", seed=0, vocab=CUT),
        }
        runs: dict[str, list[dict[str, Any]]] = {"real": [], "cut": []}
        for repeat in range(args.repeats):
            for name in ("real", "cut") if repeat % 2 == 0 else ("cut", "real"):
                runs[name].append(child(dirs[name]))

    def median(name: str, pick: Any) -> float:
        return statistics.median(pick(r) for r in runs[name])

    end = os.getloadavg()[0]
    print(f"_Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench.test_model "
          f"--repeats {args.repeats}` on {platform.machine()}, {os.cpu_count()} cores, load "
          f"{load:.1f} at the start and {end:.1f} at the end; medians._\n")  # fmt: skip
    print(f"| CPU, one process | Qwen's vocabulary (151,936 rows) | first {CUT:,} ranks "
          "(8,320 rows) | cut / real |")  # fmt: skip
    print("|---|---|---|---|")
    for label, key in (("load model and processor, s", "load"),
                       ("llguidance view and grammar, s", "grammar")):  # fmt: skip
        real, cut = median("real", lambda r, k=key: r[k]), median("cut", lambda r, k=key: r[k])
        print(f"| {label} | {real:.2f} | {cut:.2f} | {cut / real:.2f} |")
    for slots, jobs in RUNS:
        key = f"B{slots}"

        def per_token(r: dict[str, Any], k: str = key) -> float:
            return float(r[k]["cpu"]) / r[k]["tokens"] * 1e3

        def per_job(r: dict[str, Any], k: str = key) -> float:
            return float(r[k]["tokens"]) / r[k]["jobs"]

        real, cut = median("real", per_token), median("cut", per_token)
        print(f"| decode at B={slots} ({jobs} jobs), ms per output token | {real:.2f} | "
              f"{cut:.2f} | {cut / real:.2f} |")  # fmt: skip
        real_t, cut_t = median("real", per_job), median("cut", per_job)
        print(f"| output tokens per job at B={slots} | {real_t:.0f} | {cut_t:.0f} | "
              f"{cut_t / real_t:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
