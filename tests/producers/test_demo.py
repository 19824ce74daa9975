"""`advisor demo` runs the main job end to end and leaves a world the everyday commands see."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from jobs.settings import Settings
from producers.commands import demo
from producers.commands.demo import photo
from producers.ops.sequential import MEANS_METHOD, MIN_PAIRS
from store.db import engine_for
from store.models import Job
from store.repository import Repository
from tests.conftest import free_port
from tests.support import WorkerProcess, eventually, script, wait_until_ready

REAL_SHAPE_LINE = re.compile(
    r"Real-shape job .* (?P<tokens>\d+) output tokens after a \d+-token prompt in "
    r"(?P<seconds>[\d.]+)s = (?P<rate>[\d.]+) tok/s"
)


def test_the_demo_does_not_replace_a_registry_it_did_not_write(tmp_path: Path) -> None:
    registry = tmp_path / "adapters" / "registry.json"
    registry.parent.mkdir()
    registry.write_text('{"variants": {}}')
    with pytest.raises(demo.DemoFailed, match="was not written by `advisor demo`"):
        demo.prepare(Settings(data_dir=tmp_path))
    assert registry.read_text() == '{"variants": {}}'
    assert not (tmp_path / "models").exists()  # refused before building anything


def _run(env: dict[str, str], cwd: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [*script(name), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.returncode == 0, (name, args, out.returncode, out.stdout, out.stderr[-3000:])
    return out


def _gateway_pages(env: dict[str, str], cwd: Path, log: Path) -> dict[str, httpx.Response]:
    """Start `advisor-gateway`, read the dashboard and its data, stop it warmly (SIGTERM)."""
    port = free_port()
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [*script("advisor-gateway"), "--port", str(port)], env=env, cwd=cwd,
            stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            def answers() -> bool:
                assert proc.poll() is None, log.read_text()[-3000:]
                http.get("/health")
                return True

            eventually("the gateway to answer", answers, 120, poll=0.3,
                       errors=(httpx.TransportError,),
                       context=lambda: log.read_text()[-3000:])  # fmt: skip
            pages = {path: http.get(path) for path in ("/dashboard", "/dashboard/data")}
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    # uvicorn shuts down gracefully, then re-raises the signal: it ends by SIGTERM, not 0.
    assert code in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert "Application shutdown complete" in log.read_text()
    return pages


def _check_the_demos_own_report(stdout: str, data: Path, env: dict[str, str]) -> None:
    """The demo's printout: every job, its shadows and ratings, the real-shape job's figures."""
    assert "6/6 jobs finished" in stdout
    rows = {
        line.split()[0]: line.split()
        for line in stdout.splitlines()
        if line.split()[:1] in (["base"], ["fine_tuned"])
    }
    assert rows["fine_tuned"][1] == "6", stdout
    assert rows["fine_tuned"][-1] != "-"  # the fine-tuned worker served with its adapter
    assert (data / "models" / "tiny-qwen3-vl" / "config.json").exists()
    assert "plus 6/6 shadow jobs" in stdout and "6 SIMULATED ratings" in stdout
    # The real-shape job: a critique of real length, its figures consistent with its row.
    found = REAL_SHAPE_LINE.search(stdout)
    assert found is not None, stdout
    tokens, seconds, rate = int(found["tokens"]), float(found["seconds"]), float(found["rate"])
    # Text limit 240 writes ~1,000 tokens; the demo's own limit (24) would write ~300.
    assert 700 <= tokens <= 1500, stdout
    assert rate == pytest.approx(tokens / seconds, rel=0.02)
    assert "unless given `--bench FILE`" in stdout
    engine = engine_for(f"sqlite:///{data / 'advisor.db'}")
    [real] = Repository(engine).find(Job.assignment == "forced")
    engine.dispose()
    assert (real.variant, real.status, real.output_tokens) == ("base", "succeeded", tokens)
    assert real.inference_ms == pytest.approx(seconds * 1000, abs=50)
    assert f"= {real.image_tokens} image tokens" in stdout and real.image_tokens > 0

    report = subprocess.run(
        [sys.executable, "-m", "producers.cli", "report", "--advisor", "ansel", "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    report_data = json.loads(report.stdout)
    assert sum(f["simulated"] for f in report_data["feedback"]) == 6  # labelled, every one
    assert report_data["paired"][0]["pairs"] == 6
    # Six ratings and six pairs are too few to judge on: the verdict says so and falls back.
    assert report_data["verdicts"][0]["metric"] == "overall_score"
    assert f"6 pairs (< {MIN_PAIRS})" in report_data["verdicts"][0]["why"]
    assert report_data["verdicts"][0]["method"] == MEANS_METHOD


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_demo_builds_everything_and_the_everyday_commands_then_see_its_world_from_anywhere(
    tmp_path: Path,
) -> None:
    """One demo run (it builds a model and serves a real-shape job: minutes on a busy CI
    machine), then what a newcomer does next, from another directory."""
    data, cwd = tmp_path / "data", tmp_path / "somewhere-else"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}
    env.update(ADVISOR_DATA_DIR=str(data), HF_HUB_OFFLINE="1")
    # --split 1: all six on fine_tuned (its row cannot be missing), their shadows on base.
    out = _run(env, cwd, "advisor", "demo", "--jobs", "6", "--timeout", "240", "--split", "1",
               "--shadow", "1", "--feedback")  # fmt: skip
    _check_the_demos_own_report(out.stdout, data, env)
    registry = (data / "adapters" / "registry.json").resolve()
    # Every line the demo's workers log is true: nobody set the registry or the pixel budget.
    for variant in ("base", "fine_tuned"):
        logged = (data / "demo-logs" / f"worker-{variant}.log").read_text()
        assert f"{registry} (default lookup" in logged and "set by ADVISOR_REGISTRY" not in logged
        assert "exceeds this model's maximum" not in logged
        assert " dtype=float32 " in logged, logged[-3000:]

    out = _run(env, cwd, "advisor", "rollout", "set", "ansel", "base=0.9", "fine_tuned=0.1",
               "--reason", "test")  # fmt: skip
    # The demo's shadow share stays until a rollout changes it.
    assert out.stdout.strip().startswith("ansel v2: base=0.9 fine_tuned=0.1"), out.stdout
    shown = _run(env, cwd, "advisor", "rollout", "show").stdout
    assert f"registry {registry} (default lookup" in shown
    [ansel_line] = [line for line in shown.splitlines() if line.startswith("ansel ")]
    assert "base=0.9 fine_tuned=0.1" in ansel_line and "serving=base,fine_tuned" in ansel_line
    shown_json = json.loads(_run(env, cwd, "advisor", "rollout", "show", "--json").stdout)
    assert shown_json["registry"]["path"] == str(registry)
    assert shown_json["registry"]["chosen_by"] == "default lookup"
    assert shown_json["registry"]["base_model_from"] == "registry"
    ansel = next(a for a in shown_json["advisors"] if a["advisor"] == "ansel")
    assert ansel["weights"] == {"base": 0.9, "fine_tuned": 0.1}

    report = json.loads(_run(env, cwd, "advisor", "report", "--json").stdout)
    rows = {v["variant"]: v for v in report["variants"]}
    assert (rows["fine_tuned"]["routed"], rows["fine_tuned"]["finished"]) == (6, 6), rows
    guard = _run(env, cwd, "advisor", "guard", "--once").stdout
    assert guard.startswith("ansel/fine_tuned: ok: no rule breached"), guard
    capacity = json.loads(_run(env, cwd, "advisor", "capacity", "--json").stdout)
    assert {v["variant"] for v in capacity["variants"]} == {"base", "fine_tuned"}
    check = _run(env, cwd, "advisor-worker", "check", "--variant", "fine_tuned", "--json")
    checked = json.loads(check.stdout)
    assert (checked["registry"]["path"], checked["base_model_from"]) == (str(registry), "registry")
    assert checked["adapter_fingerprint"]
    assert checked["dtype"] == "float32"  # what the worker's start line says

    pages = _gateway_pages(env, cwd, tmp_path / "gateway.log")
    assert pages["/dashboard"].status_code == 200
    assert "<html" in pages["/dashboard"].text.lower()
    assert pages["/dashboard/data"].status_code == 200, pages["/dashboard/data"].text
    split = {s["advisor"]: s for s in pages["/dashboard/data"].json()["split"]}
    assert split["ansel"]["variants"] == ["base", "fine_tuned"]
    assert split["ansel"]["weights"] == {"base": 0.9, "fine_tuned": 0.1}

    log = tmp_path / "worker-fine_tuned.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [*script("advisor-worker"), "run", "--variant", "fine_tuned"], env=env, cwd=cwd,
            stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    worker = WorkerProcess("fine_tuned", proc, log)
    try:
        wait_until_ready(worker, Repository(engine_for(f"sqlite:///{data / 'advisor.db'}")), 240)
        image = cwd / "my-photo.jpg"  # the user's own file, outside any image root
        image.write_bytes(photo(99))
        out = _run(env, cwd, "advisor", "submit", image.name, "--advisor", "ansel",
                   "--variant", "fine_tuned", "--wait", "--json")  # fmt: skip
    finally:
        code = worker.terminate(timeout=120)
    job = json.loads(out.stdout)
    assert (job["status"], job["variant"], job["assignment"]) == ("succeeded", "fine_tuned",
                                                                  "forced"), job  # fmt: skip
    assert job["worker"].startswith(f"fine_tuned-{proc.pid}@")
    assert job["base_model"] == str((data / "models" / "tiny-qwen3-vl").resolve())
    assert job["adapter_fingerprint"], job
    assert code == 0, worker.output()[-3000:]
