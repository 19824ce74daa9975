"""Capacity with `--bench FILE`: a variant with no served job is planned from its saved bench;
measured jobs still win; a bad file is refused, naming it and the way out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from advisor_worker.devtools.worker_bench import BatchFigures, BenchResult, save
from jobs.variants import load_registry
from producers import cli
from producers.commands import capacity as capacity_command
from producers.errors import InvalidBenchFile
from producers.ops.bench_file import read_bench, read_benches
from producers.ops.capacity import plan_capacity, render_plan
from producers.ops.memory import WorkerMemory
from producers.rollouts import RolloutStore
from producers.services import Services
from store.db import engine_for
from tests.producers.conftest import make_settings
from tests.producers.crafted_jobs import Crafter


def figures(batch: int, jobs_per_hour: float, p50: float, peak_mb: float) -> BatchFigures:
    return BatchFigures(batch=batch, jobs=8, seconds=8 * 3600 / jobs_per_hour,
                        jobs_per_hour=jobs_per_hour, output_tokens_per_second=40.0,
                        p50_seconds=p50, p95_seconds=p50 * 1.2, mean_output_tokens=1000.0,
                        peak_memory_mb=peak_mb, fits_memory=True)  # fmt: skip


def bench_file(path: Path, variant: str, base_model: str, recommended: int = 4) -> Path:
    """Written by the worker's own `save`, so the reader is tested against the writer."""
    result = BenchResult(
        variant=variant, base_model=base_model, host="Darwin arm64, 10 CPUs", date="2026-12-06",
        text_limit=240, p50_bound=1.5,
        batches=[figures(1, 60.0, 60.0, 3000.0), figures(4, 180.0, 80.0, 4096.0)],
        recommended_batch=recommended,
    )  # fmt: skip
    save(result, path)
    return path


def rollout(url: str, weights: dict[str, float]) -> RolloutStore:
    store = RolloutStore(engine_for(url))
    store.set("ansel", weights, known_variants={"base", "fine_tuned"}, actor="op", reason="test")
    return store


def test_a_variant_without_jobs_is_planned_from_its_bench_and_measured_jobs_win(
    migrated_url: str, registry_file: Path, tmp_path: Path
) -> None:
    store = rollout(migrated_url, {"base": 0.5, "fine_tuned": 0.5})
    crafter = Crafter(store.engine)
    base_jobs = crafter.queue(18, variant="base")  # 36 arrivals in 0.1 h: 360 jobs/h
    crafter.queue(18, variant="fine_tuned")
    for job_id in base_jobs[:3]:
        crafter.succeed(job_id, inference_ms=30_000)
    registry = load_registry(registry_file, "m")
    benches = read_benches(
        [bench_file(tmp_path / "ft.json", "fine_tuned", "m"),
         bench_file(tmp_path / "base.json", "base", "m")],
        {name: registry.get(name).base_model for name in registry.names},
    )  # fmt: skip

    memory = {"base": WorkerMemory(3.0, "measured", 1), "fine_tuned": WorkerMemory(3.0, "default")}

    plan = plan_capacity(
        store.engine, registry, store, window_hours=0.1, benches=benches,
        memory_per_worker_gb=memory,
    )  # fmt: skip

    rows = {v.variant: v for v in plan.variants}
    ft, base = rows["fine_tuned"], rows["base"]
    # B=4's 180 jobs/h: 20 s of worker time per job; its latency is B=4's p50.
    assert ft.service_source == f"bench {tmp_path / 'ft.json'}" and not ft.service_is_default
    assert (ft.worker_seconds_per_job, ft.service_seconds) == pytest.approx((20.0, 80.0))
    # ceil(180 jobs/h / 3600 * 20 s / 0.7) = ceil(1.43) = 2; the 60 s default would say 5.
    assert ft.workers == 2
    assert ft.memory_source == ft.service_source
    assert ft.memory_gb_per_worker == pytest.approx(4096 * 2**20 / 1e9)
    # base served jobs in the window: measured, its bench ignored for time.
    assert (base.service_source, base.service_seconds) == ("measured", pytest.approx(30.0))
    assert (base.memory_source, base.memory_gb_per_worker) == ("measured", 3.0)
    assert any("planned from" in w and "ft.json" in w for w in plan.warnings)
    assert not any(w.startswith("base:") for w in plan.warnings)
    assert "80.0b" in render_plan(plan)


def test_capacity_command_reads_bench_files_and_says_where_each_figure_came_from(
    sqlite_db: str, tmp_path: Path, registry_file: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    rollout(sqlite_db, {"base": 0.5, "fine_tuned": 0.5})
    services = Services(make_settings(tmp_path, sqlite_db, registry_file))
    monkeypatch.setattr(capacity_command, "services", lambda: services)
    ft = bench_file(
        tmp_path / "ft.json", "fine_tuned", services.registry.get("fine_tuned").base_model
    )
    args = argparse.Namespace(
        window_hours=24.0, target_utilisation=0.7, memory_gb=None, host_memory_gb=64.0,
        next_step=None, json=True, bench=[ft],
    )  # fmt: skip

    assert capacity_command.cmd_capacity(args) == 0

    rows = {v["variant"]: v for v in json.loads(capsys.readouterr().out)["variants"]}
    assert rows["fine_tuned"]["service_source"] == f"bench {ft}"
    assert rows["fine_tuned"]["worker_seconds_per_job"] == pytest.approx(20.0)
    assert rows["fine_tuned"]["memory_source"] == f"bench {ft}"
    assert rows["base"]["service_source"] == "default" and rows["base"]["service_is_default"]
    assert rows["base"]["worker_seconds_per_job"] == 60.0


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read it"),
        ("{not json", "not JSON"),
        ('{"variant": "base"}', "no 'recommended_batch' field"),
        ('{"variant": "base", "base_model": "m", "recommended_batch": 8, "batches": []}',
         "recommended_batch 8 has 0 rows"),
    ],
    ids=["missing", "corrupt", "not-a-bench", "no-row-for-its-b"],
)  # fmt: skip
def test_a_bad_bench_file_is_refused_naming_the_file_and_the_way_out(
    tmp_path: Path, content: str | None, says: str
) -> None:
    path = tmp_path / "bench.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InvalidBenchFile) as refused:
        read_bench(path)
    message = str(refused.value)
    assert str(path) in message and says in message and "advisor-worker bench" in message


def test_a_bench_for_another_model_variant_or_a_second_file_for_one_variant_is_refused(
    tmp_path: Path,
) -> None:
    served = {"base": "m", "fine_tuned": "m"}
    other_model = bench_file(tmp_path / "other.json", "base", "another/model")
    with pytest.raises(InvalidBenchFile, match="now serves 'm'; rerun `advisor-worker bench`"):
        read_benches([other_model], served)
    unknown = bench_file(tmp_path / "xl.json", "xl", "m")
    with pytest.raises(InvalidBenchFile, match=r"'xl' is not in the registry; known: \['base'"):
        read_benches([unknown], served)
    first, second = (bench_file(tmp_path / f"{n}.json", "base", "m") for n in ("a", "b"))
    with pytest.raises(InvalidBenchFile, match="base already has .*a.json; give one file"):
        read_benches([first, second], served)


def test_capacity_under_json_answers_a_bad_bench_file_as_json(
    tmp_path: Path, sqlite_db: str, registry_file: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    services = Services(make_settings(tmp_path, sqlite_db, registry_file))
    monkeypatch.setattr(capacity_command, "services", lambda: services)
    missing = tmp_path / "nowhere.json"

    status = cli.main(["capacity", "--bench", str(missing), "--json"])

    out, err = capsys.readouterr()
    error = json.loads(out)
    assert status == error["exit_code"] == 1
    assert error["error"] == "invalid_bench_file" and str(missing) in error["message"]
    assert error["message"] in err
