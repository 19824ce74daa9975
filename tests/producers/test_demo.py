"""`advisor demo` runs the main job end to end from an empty data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_the_demo_builds_everything_and_every_job_succeeds(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}
    env["ADVISOR_DATA_DIR"] = str(tmp_path / "data")
    out = subprocess.run(
        [sys.executable, "-m", "producers.cli", "demo", "--jobs", "6", "--timeout", "240",
         "--shadow", "1", "--feedback"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "6/6 jobs finished" in out.stdout
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:3]}
    assert int(rows["base"][1]) + int(rows["fine_tuned"][1]) == 6, out.stdout
    assert rows["fine_tuned"][-1] != "-"  # the fine-tuned worker served with its adapter
    assert (tmp_path / "data" / "models" / "tiny-qwen3-vl" / "config.json").exists()
    assert "plus 6/6 shadow jobs" in out.stdout and "6 SIMULATED ratings" in out.stdout

    env["ADVISOR_REGISTRY"] = str(tmp_path / "data" / "demo-registry.json")
    report = subprocess.run(
        [sys.executable, "-m", "producers.cli", "report", "--advisor", "ansel", "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    data = json.loads(report.stdout)
    assert sum(f["simulated"] for f in data["feedback"]) == 6  # labelled, every one
    assert data["paired"][0]["pairs"] == 6
    # Six ratings and six pairs are too few to judge on: the verdict says so and falls back.
    assert data["verdicts"][0]["metric"] == "overall_score"
    assert "6 pairs (< 10)" in data["verdicts"][0]["why"]
    assert data["verdicts"][0]["method"] == "sequential (mSPRT)"
