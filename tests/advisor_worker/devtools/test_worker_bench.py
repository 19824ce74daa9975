"""`advisor-worker bench`: the worker's scheduler at each B on the tiny model, and its advice."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from advisor_worker.devtools.worker_bench import BatchFigures, parse_batches, recommend
from jobs.errors import ConfigError
from tests.support import WORKER_BIN, Env


def figures(batch: int, jobs_per_hour: float, p50: float, fits: bool = True) -> BatchFigures:
    return BatchFigures(
        batch=batch, jobs=8, seconds=1.0, jobs_per_hour=jobs_per_hour,
        output_tokens_per_second=1.0, p50_seconds=p50, p95_seconds=p50,
        mean_output_tokens=1000, peak_memory_mb=100, fits_memory=fits,
    )  # fmt: skip


def test_the_recommended_b_has_the_most_jobs_per_hour_within_the_latency_bound() -> None:
    runs = [figures(1, 100, 10.0), figures(2, 180, 12.0), figures(4, 300, 14.9),
            figures(8, 500, 15.1)]  # fmt: skip

    assert recommend(runs) == 4


def test_a_b_whose_memory_does_not_fit_is_never_recommended() -> None:
    runs = [figures(1, 100, 10.0), figures(2, 180, 11.0), figures(4, 300, 12.0, fits=False)]

    assert recommend(runs) == 2


def test_bad_batch_lists_are_refused_with_the_form_to_use() -> None:
    assert parse_batches("8,1, 4,2") == [1, 2, 4, 8]
    for bad in ("", "0,1", "a,b", "1,128"):
        with pytest.raises(ConfigError, match=r"--batch 1,2,4,8"):
            parse_batches(bad)


# A model load, a warm-up and four generations in a subprocess: more than the default limit
# on a busy two-core machine.
@pytest.mark.timeout(900)
def test_bench_serves_the_tiny_model_at_each_b_and_saves_what_it_prints(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"variants": {}}))
    saved = tmp_path / "bench.json"
    env = Env({"ADVISOR_BASE_MODEL": str(tiny_model_dir), "ADVISOR_REGISTRY": str(registry),
               "ADVISOR_DATA_DIR": str(tmp_path / "data")})  # fmt: skip
    argv = [*WORKER_BIN,
        "bench", "--variant", "base", "--batch", "2,1", "--jobs", "2",
        "--text-limit", "8", "--json", "--save", str(saved),
    ]  # fmt: skip

    out = subprocess.run(argv, env=env.full(), capture_output=True, text=True, timeout=850)

    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed == json.loads(saved.read_text())
    assert [b["batch"] for b in printed["batches"]] == [1, 2]
    assert all(b["jobs"] == 2 and b["jobs_per_hour"] > 0 for b in printed["batches"])
    assert all(b["p50_seconds"] <= b["p95_seconds"] for b in printed["batches"])
    assert printed["recommended_batch"] in (1, 2)
    assert printed["variant"] == "base" and printed["text_limit"] == 8
