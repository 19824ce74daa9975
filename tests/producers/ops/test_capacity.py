"""Capacity: workers per queue from a crafted arrival rate and service time, now and one step on."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path

import pytest

from jobs.clock import utcnow
from jobs.contracts import Assignment
from jobs.variants import load_registry
from producers.commands import capacity as capacity_command
from producers.ops.capacity import next_weights, plan_capacity, render_plan
from producers.ops.memory import (
    DEFAULT_MODEL_MEMORY_GB,
    WORKER_OVERHEAD_GB,
    WorkerMemory,
    host_memory_gb,
    worker_memory_gb,
)
from producers.rollouts import RolloutStore
from producers.services import Services
from store.db import engine_for
from store.repository import Repository
from tests.producers.conftest import make_settings
from tests.producers.crafted_jobs import Crafter


def rollout(url: str, weights: dict[str, float]) -> RolloutStore:
    store = RolloutStore(engine_for(url))
    store.set("ansel", weights, known_variants={"base", "fine_tuned"}, actor="op", reason="test")
    return store


def test_workers_follow_arrival_rate_service_time_and_the_next_ladder_step(
    migrated_url: str, registry_file: Path
) -> None:
    store = rollout(migrated_url, {"base": 0.75, "fine_tuned": 0.25})
    crafter = Crafter(store.engine)
    # 36 arrivals in a 6-minute window: 360 jobs/h, i.e. 0.1 jobs/s.
    base = crafter.queue(27, variant="base")
    ft = crafter.queue(9, variant="fine_tuned")
    for job_id, ms in zip(base, (30_000, 40_000, 50_000), strict=False):
        crafter.succeed(job_id, inference_ms=ms)
    for job_id in ft[:3]:
        crafter.succeed(job_id, inference_ms=60_000)
    old = crafter.queue(10, variant="base")
    crafter.set_times(old, queued_at=utcnow() - timedelta(hours=2))

    plan = plan_capacity(
        store.engine, load_registry(registry_file, "m"), store, window_hours=0.1,
        memory_per_worker_gb={"base": WorkerMemory(3.0, "default"),
                              "fine_tuned": WorkerMemory(3.5, "measured", 2)},
        host_memory_gb=26.0,
        queue_depths={"advisor.base": 12, "advisor.fine_tuned": 0},
    )  # fmt: skip

    [ansel] = plan.advisors
    assert (ansel.jobs, ansel.rate_per_hour) == (36, pytest.approx(360.0))
    assert ansel.next_weights == pytest.approx({"base": 0.5, "fine_tuned": 0.5})
    rows = {v.variant: v for v in plan.variants}
    assert rows["base"].service_seconds == pytest.approx(40.0)
    assert rows["fine_tuned"].service_seconds == pytest.approx(60.0)
    # base: ceil(0.1 * .75 * 40 / .7) = ceil(4.29); fine_tuned: ceil(.1 * .25 * 60 / .7) = 3.
    assert (rows["base"].workers, rows["fine_tuned"].workers) == (5, 3)
    # At 50/50: base ceil(2.86) = 3, fine_tuned ceil(4.29) = 5.
    assert (rows["base"].next_workers, rows["fine_tuned"].next_workers) == (3, 5)
    assert (rows["base"].queue_depth, rows["fine_tuned"].queue_depth) == (12, 0)
    assert "advisor.base                12" in render_plan(plan)
    assert (plan.memory_gb, plan.next_memory_gb) == pytest.approx((25.5, 26.5))
    assert plan.fits and not plan.next_fits
    assert [w.split(":")[0] for w in plan.warnings] == ["next step"]


def test_a_variant_without_data_gets_the_default_service_time_a_flag_and_one_worker(
    sqlite_db: str, registry_file: Path
) -> None:
    store = rollout(sqlite_db, {"base": 0.9, "fine_tuned": 0.1})
    crafter = Crafter(store.engine)
    for job_id in crafter.queue(4, variant="base"):
        crafter.succeed(job_id, inference_ms=20_000)

    plan = plan_capacity(store.engine, load_registry(registry_file, "m"), store, window_hours=24)

    ft = next(v for v in plan.variants if v.variant == "fine_tuned")
    assert (ft.service_is_default, ft.service_samples, ft.service_seconds) == (True, 0, 60.0)
    assert ft.workers == 1  # weighted, so at least one process even at a trickle
    assert any(w.startswith("fine_tuned: no succeeded job") for w in plan.warnings)


def test_next_weights_climb_the_ladder_and_stop_at_full() -> None:
    assert next_weights({"base": 1.0}, "fine_tuned") == pytest.approx(
        {"base": 0.9, "fine_tuned": 0.1}
    )
    assert next_weights({"base": 0.9, "fine_tuned": 0.1}, "fine_tuned")["fine_tuned"] == 0.25
    assert next_weights({"base": 0.5, "fine_tuned": 0.5}, "fine_tuned") == pytest.approx(
        {"base": 0.0, "fine_tuned": 1.0}
    )
    assert next_weights({"base": 0.0, "fine_tuned": 1.0}, "fine_tuned")["fine_tuned"] == 1.0
    assert next_weights({"base": 0.9, "fine_tuned": 0.1}, "fine_tuned", 0.4)["base"] == 0.6
    assert next_weights({"base": 1.0}, None) == {"base": 1.0}


@pytest.fixture
def command_services(
    sqlite_db: str, tmp_path: Path, registry_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Services:
    """The capacity command's Services, on a half-and-half split of ansel."""
    rollout(sqlite_db, {"base": 0.5, "fine_tuned": 0.5})
    services = Services(make_settings(tmp_path, sqlite_db, registry_file))
    monkeypatch.setattr(capacity_command, "services", lambda: services)
    return services


def test_capacity_command_prints_the_plan_as_json(
    command_services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(
        window_hours=24.0, target_utilisation=0.7, memory_gb=3.0, host_memory_gb=16.0,
        next_step=None, json=True, bench=None,
    )  # fmt: skip

    assert capacity_command.cmd_capacity(args) == 0

    plan = json.loads(capsys.readouterr().out)
    assert [v["variant"] for v in plan["variants"]] == ["base", "fine_tuned"]
    assert plan["processes"] == 2 and plan["fits"] is True
    assert [v["queue_depth"] for v in plan["variants"]] == [0, 0]  # the embedded broker, empty


def test_a_batching_workers_overlapping_jobs_are_planned_at_its_measured_rate(
    migrated_url: str, registry_file: Path
) -> None:
    store = rollout(migrated_url, {"base": 1.0})
    crafter = Crafter(store.engine)
    # 36 arrivals in 6 minutes: 0.1 jobs/s. One worker ran 4 at a time, each taking 40 s.
    ids = crafter.queue(36, variant="base")
    end = utcnow()
    for index, job_id in enumerate(ids[:8]):
        crafter.succeed(job_id, inference_ms=40_000)
        # Two rounds of four overlapping rows on one worker: busy 80 s for 8 jobs.
        crafter.set_times([job_id], worker="base-1@mac", completed_at=end - timedelta(
            seconds=0 if index < 4 else 40
        ))  # fmt: skip

    plan = plan_capacity(store.engine, load_registry(registry_file, "m"), store, window_hours=0.1)

    base = {v.variant: v for v in plan.variants}["base"]
    assert base.service_seconds == pytest.approx(40.0)
    assert base.worker_seconds_per_job == pytest.approx(10.0)
    # ceil(0.1 * 10 / 0.7) = 2 workers; planning at the one-job latency would say ceil(5.7) = 6.
    assert base.workers == 2
    assert "worker s" in render_plan(plan)


def test_the_shadow_share_adds_load_on_the_other_arm_and_shadows_are_not_arrivals(
    migrated_url: str, registry_file: Path
) -> None:
    store = RolloutStore(engine_for(migrated_url))
    store.set("ansel", {"base": 0.75, "fine_tuned": 0.25}, known_variants={"base", "fine_tuned"},
              actor="op", reason="pair", shadow=0.4)  # fmt: skip
    crafter = Crafter(store.engine)
    primaries = crafter.queue(36, variant="base")
    for job_id in primaries:
        crafter.succeed(job_id, inference_ms=10_000)
    shadows = crafter.queue(14, variant="fine_tuned", assignment=Assignment.SHADOW)
    for shadow, primary in zip(shadows, primaries, strict=False):
        crafter.set_times([shadow], shadow_of=primary)  # type: ignore[arg-type]

    plan = plan_capacity(
        store.engine, load_registry(registry_file, "m"), store, window_hours=0.1,
        default_service_seconds=20.0,
        queue_depths={"advisor.base": 0, "advisor.fine_tuned.shadow": 14},
    )  # fmt: skip

    [ansel] = plan.advisors
    assert (ansel.jobs, ansel.shadow) == (36, 0.4)
    rows = {v.variant: v for v in plan.variants}
    # 360 jobs/h: base 270 + 36 shadows of fine_tuned's 90; fine_tuned 90 + 108 of base's 270.
    assert rows["base"].shadow_rate_per_hour == pytest.approx(36.0)
    assert rows["base"].rate_per_hour == pytest.approx(306.0)
    assert rows["fine_tuned"].shadow_rate_per_hour == pytest.approx(108.0)
    assert rows["fine_tuned"].rate_per_hour == pytest.approx(198.0)
    # fine_tuned: ceil(198 / 3600 * 20 / 0.7) = ceil(1.57) = 2; without shadows it would be 1.
    assert rows["fine_tuned"].workers == 2
    assert rows["fine_tuned"].shadow_queue_depth == 14
    assert "of which shadow" in render_plan(plan) and "shadow 0.40" in render_plan(plan)


def test_the_host_memory_is_this_hosts_as_proc_meminfo_states_it() -> None:
    total_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    measured = host_memory_gb()
    assert measured is not None
    assert measured == pytest.approx(total_kib * 1024 / 1e9, rel=0.01)


def test_a_local_checkpoints_worker_memory_is_its_weights_plus_the_overhead(
    tmp_path: Path,
) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 2_000_000)
    (tmp_path / "config.json").write_text("{}")
    assert worker_memory_gb(str(tmp_path)) == pytest.approx(0.002 + WORKER_OVERHEAD_GB)
    assert worker_memory_gb("mlx-community/Qwen3-VL-4B-Instruct-4bit") == DEFAULT_MODEL_MEMORY_GB


def test_capacity_uses_each_variants_measured_peak_memory_and_says_so(
    command_services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    services = command_services
    fine_tuned = services.registry.get("fine_tuned")
    repo = Repository(services.engine)
    for worker, peak in (("ft-1", 1800.0), ("ft-2", 2400.0)):
        repo.beat({"worker": worker, "variant": "fine_tuned", "queue": "advisor.fine_tuned",
                   "host": "h", "pid": 1, "base_model": fine_tuned.base_model,
                   "peak_rss_mb": peak})  # fmt: skip
    # A peak measured on another base model says nothing of this one's workers.
    repo.beat({"worker": "b-old", "variant": "base", "queue": "advisor.base", "host": "h",
               "pid": 2, "base_model": "another/model", "peak_rss_mb": 9000.0})  # fmt: skip
    args = argparse.Namespace(
        window_hours=24.0, target_utilisation=0.7, memory_gb=None, host_memory_gb=64.0,
        next_step=None, json=True, bench=None,
    )  # fmt: skip

    assert capacity_command.cmd_capacity(args) == 0

    rows = {v["variant"]: v for v in json.loads(capsys.readouterr().out)["variants"]}
    assert rows["fine_tuned"]["memory_source"] == "measured"
    assert rows["fine_tuned"]["memory_gb_per_worker"] == pytest.approx(2400 * 2**20 / 1e9)
    assert rows["base"]["memory_source"] in ("default", "checkpoint")
    assert rows["base"]["memory_gb_per_worker"] == pytest.approx(
        worker_memory_gb(services.registry.get("base").base_model)
    )
    args.json = False
    capacity_command.cmd_capacity(args)
    assert "fine_tuned 2.52 GB (measured)" in capsys.readouterr().out
