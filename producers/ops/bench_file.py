"""Saved `advisor-worker bench` results (`--save FILE`), as `advisor capacity` reads them.

The format is the JSON advisor_worker/devtools/worker_bench.py writes (BenchResult.to_dict);
producers never import the worker, so only the fields the plan needs are read, and checked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producers.errors import InvalidBenchFile

__all__ = ["BenchFigures", "read_bench", "read_benches"]

_WAY_OUT = "save one with `advisor-worker bench --variant NAME --save FILE`"


@dataclass(frozen=True)
class BenchFigures:
    """One variant's bench at the B it recommends: worker seconds per job and peak memory."""

    path: str
    variant: str
    base_model: str
    host: str
    date: str
    batch: int  # the recommended B
    jobs_per_hour: float
    p50_seconds: float
    peak_memory_mb: float

    @property
    def worker_seconds_per_job(self) -> float:
        return 3600 / self.jobs_per_hour


def read_bench(path: Path) -> BenchFigures:
    """The figures at the file's recommended B; InvalidBenchFile names the file and the fix."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InvalidBenchFile(
            f"--bench {path}: cannot read it ({exc.strerror}); {_WAY_OUT}"
        ) from exc
    except ValueError as exc:
        raise InvalidBenchFile(f"--bench {path}: not JSON ({exc}); {_WAY_OUT}") from exc
    try:
        return _figures(path, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidBenchFile(
            f"--bench {path}: not an `advisor-worker bench --save` file ({_describe(exc)}); "
            f"{_WAY_OUT}"
        ) from exc


def read_benches(paths: Iterable[Path], base_models: Mapping[str, str]) -> dict[str, BenchFigures]:
    """variant -> its bench; refuses an unknown variant, a base model other than the one the
    variant serves now, and two files for one variant."""
    benches: dict[str, BenchFigures] = {}
    for path in paths:
        bench = read_bench(path)
        if bench.variant not in base_models:
            raise InvalidBenchFile(
                f"--bench {path}: variant {bench.variant!r} is not in the registry; "
                f"known: {sorted(base_models)}"
            )
        if bench.base_model != base_models[bench.variant]:
            raise InvalidBenchFile(
                f"--bench {path}: measured {bench.variant} on {bench.base_model!r}, but it now "
                f"serves {base_models[bench.variant]!r}; rerun `advisor-worker bench` on this "
                "model, or leave the file out"
            )
        if bench.variant in benches:
            raise InvalidBenchFile(
                f"--bench {path}: {bench.variant} already has {benches[bench.variant].path}; "
                "give one file per variant (the host kind the plan is for)"
            )
        benches[bench.variant] = bench
    return benches


def _figures(path: Path, data: Any) -> BenchFigures:
    if not isinstance(data, dict):
        raise TypeError("a JSON object expected")
    batch = data["recommended_batch"]
    rows = [row for row in data["batches"] if row["batch"] == batch]
    if len(rows) != 1:
        raise ValueError(f"recommended_batch {batch!r} has {len(rows)} rows in `batches`")
    [row] = rows
    jobs_per_hour, p50, peak = (
        float(row["jobs_per_hour"]),
        float(row["p50_seconds"]),
        float(row["peak_memory_mb"]),
    )
    if not all(math.isfinite(x) and x > 0 for x in (jobs_per_hour, p50, peak)):
        raise ValueError(f"B={batch}: jobs_per_hour, p50_seconds and peak_memory_mb must be > 0")
    variant, base_model = data["variant"], data["base_model"]
    if not (isinstance(variant, str) and variant and isinstance(base_model, str)):
        raise TypeError("`variant` and `base_model` must be strings")
    return BenchFigures(
        path=str(path), variant=variant, base_model=base_model, host=str(data.get("host", "?")),
        date=str(data.get("date", "?")), batch=int(batch), jobs_per_hour=jobs_per_hour,
        p50_seconds=p50, peak_memory_mb=peak,
    )  # fmt: skip


def _describe(exc: Exception) -> str:
    return f"no {exc.args[0]!r} field" if isinstance(exc, KeyError) else str(exc)
