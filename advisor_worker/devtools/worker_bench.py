"""`advisor-worker bench`: jobs per hour at each B on this host, on the real-shape workload.

It runs the worker's own decode path (advisor_worker.batching's scheduler, the one the
worker serves with) on the variant's model, so what it prints is what a worker on this host
does, without the broker or the database (their cost per job is milliseconds; see
docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from advisor_worker.batching import BatchScheduler, GenerationJob
from advisor_worker.devtools.workload import REAL_SHAPE_TEXT_LIMIT, real_shape_jobs
from advisor_worker.generation import model_geometry
from advisor_worker.provider import ModelProvider
from jobs.analysis import generation_schema
from jobs.errors import ConfigError

__all__ = [
    "P50_BOUND",
    "REAL_SHAPE_TEXT_LIMIT",
    "BatchFigures",
    "BenchResult",
    "parse_batches",
    "recommend",
    "render",
    "run_bench",
]

# A B is recommended only while a critique's median time stays within this many times
# B=1's: more jobs per hour must not make each user wait much longer.
P50_BOUND = 1.5
# And only while the process's peak memory stays below this share of the host's.
MEMORY_SHARE = 0.8


@dataclass(frozen=True)
class BatchFigures:
    """One B's run: throughput, per-job latency (joining the batch to the last token), memory."""

    batch: int
    jobs: int
    seconds: float
    jobs_per_hour: float
    output_tokens_per_second: float
    p50_seconds: float
    p95_seconds: float
    mean_output_tokens: float
    peak_memory_mb: float
    fits_memory: bool


@dataclass(frozen=True)
class BenchResult:
    """What `advisor-worker bench` measured, and the B it recommends for this host."""

    variant: str
    base_model: str
    host: str
    date: str
    text_limit: int
    p50_bound: float
    batches: list[BatchFigures]
    recommended_batch: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_batches(text: str) -> list[int]:
    """`1,2,4,8` -> [1, 2, 4, 8]; refuses anything else with the way out."""
    try:
        batches = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        batches = []
    if not batches or batches[0] < 1 or batches[-1] > 64:
        raise ConfigError(f"--batch {text!r}: give batch sizes from 1 to 64, e.g. --batch 1,2,4,8")
    return batches


def recommend(figures: list[BatchFigures], bound: float = P50_BOUND) -> int:
    """The B of most jobs per hour whose p50 is within `bound` x B=1's and whose memory fits."""
    base = min(figures, key=lambda f: f.batch)
    eligible = [
        f for f in figures if f.fits_memory and f.p50_seconds <= bound * base.p50_seconds
    ] or [base]
    return max(eligible, key=lambda f: f.jobs_per_hour).batch


def run_bench(
    provider: ModelProvider,
    *,
    variant: str,
    batches: list[int],
    jobs: int,
    pixel_budget: int,
    text_limit: int = REAL_SHAPE_TEXT_LIMIT,
    temperature: float = 0.2,
) -> BenchResult:
    """Load the variant once, then serve `jobs` real-shape jobs at each B on this thread."""
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give at least 1 job per batch size")
    loaded = provider.load(schema=generation_schema(text_limit))
    model, processor = provider.model, provider.processor
    geometry = model_geometry(processor, pixel_budget, chosen=False)
    figures = []
    for batch in batches:
        # The same jobs (same photos and seeds) at every B, so only B differs.
        specs = real_shape_jobs(jobs, geometry, temperature=temperature, text_limit=text_limit)
        # On the provider's MLX thread, as the worker's own scheduler runs.
        figures.append(provider.run(_run_one, model, processor, batch, specs))
    return BenchResult(
        variant=variant,
        base_model=loaded.base_model,
        host=f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        date=time.strftime("%Y-%m-%d", time.gmtime()),
        text_limit=text_limit,
        p50_bound=P50_BOUND,
        batches=figures,
        recommended_batch=recommend(figures),
    )


def _run_one(model: Any, processor: Any, batch: int, specs: list[GenerationJob]) -> BatchFigures:
    scheduler = BatchScheduler(model, processor, slots=batch)
    started = time.perf_counter()
    tickets = [scheduler.submit(spec) for spec in specs]
    scheduler.stop()
    scheduler.run()
    seconds = time.perf_counter() - started
    results = [ticket.result() for ticket in tickets]
    latencies = sorted(r.seconds for r in results)
    tokens = sum(r.output_tokens for r in results)
    peak = _peak_memory_mb()
    return BatchFigures(
        batch=batch,
        jobs=len(results),
        seconds=round(seconds, 3),
        jobs_per_hour=round(len(results) / seconds * 3600, 1),
        output_tokens_per_second=round(tokens / seconds, 2),
        p50_seconds=round(statistics.median(latencies), 3),
        p95_seconds=round(_percentile(latencies, 0.95), 3),
        mean_output_tokens=round(tokens / len(results), 1),
        peak_memory_mb=round(peak, 1),
        fits_memory=_fits_memory(peak),
    )


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _peak_memory_mb() -> float:
    """The process's peak resident memory so far (Metal's peak on a Mac, if larger)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    rss_mb = peak / 1024 if sys.platform != "darwin" else peak / 2**20
    try:
        import mlx.core as mx

        return max(rss_mb, mx.get_peak_memory() / 2**20)
    except (ImportError, AttributeError):
        return rss_mb


def _fits_memory(peak_mb: float) -> bool:
    try:
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError):
        return True
    return peak_mb <= MEMORY_SHARE * total_mb


def render(result: BenchResult) -> str:
    """The table a person reads, ending with the recommendation."""
    base = next(f for f in result.batches if f.batch == min(b.batch for b in result.batches))
    lines = [
        f"{result.variant} ({result.base_model}) on {result.host}, {result.date}; "
        f"real-shape workload (text limit {result.text_limit})",
        f"{'B':>3} {'jobs':>5} {'jobs/h':>9} {'vs B=1':>7} {'tok/s':>8} "
        f"{'p50 s':>8} {'p95 s':>8} {'out tok':>8} {'peak MB':>9}",
    ]
    for f in result.batches:
        lines.append(
            f"{f.batch:>3} {f.jobs:>5} {f.jobs_per_hour:>9.1f} "
            f"{f.jobs_per_hour / base.jobs_per_hour:>6.2f}x {f.output_tokens_per_second:>8.1f} "
            f"{f.p50_seconds:>8.2f} {f.p95_seconds:>8.2f} {f.mean_output_tokens:>8.0f} "
            f"{f.peak_memory_mb:>9.0f}" + ("" if f.fits_memory else "  (over memory)")
        )
    lines.append(
        f"Recommended: ADVISOR_WORKER_BATCH={result.recommended_batch} (most jobs/h with p50 "
        f"within {result.p50_bound:g}x B={base.batch}'s and memory under "
        f"{MEMORY_SHARE:.0%} of the host's)"
    )
    return "\n".join(lines)


def save(result: BenchResult, path: Path) -> None:
    """Write the result as JSON, for the record and for later comparison."""
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
