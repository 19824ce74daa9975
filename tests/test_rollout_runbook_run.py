"""The rollout runbook (docs/rollout.md) executed command by command on the embedded default.

Every `# step:` command runs its console script's module as `python -m` (forked from the
suite's fork server, tests/forkserver.py); every `# workers:` block runs too: `advisor-worker
launchd` writes the plists, and `launchctl` (macOS only) is played by `LaunchdHost`, which
starts each plist's ProgramArguments cold with its EnvironmentVariables and stops it the way
launchd's bootout does (SIGTERM, a warm shutdown). Between stages the test
sends ansel traffic, so report and guard judge real finished jobs.
"""

from __future__ import annotations

import io
import json
import os
import plistlib
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from advisor_worker.devtools.adapter_maker import write_random_adapter
from jobs.contracts import Assignment, Status
from jobs.settings import Settings
from producers import Client, SubmitItem
from producers.rollouts import RolloutStore
from store.db import engine_for
from store.repository import Repository
from tests.deploy_support import RUNBOOK, RunbookStep, runbook_steps
from tests.support import WorkerProcess, run_command, wait_until_final, wait_until_ready

# Each console script's module (pyproject), run as `python -m`.
PROGRAMS = {"advisor": "producers.cli", "advisor-worker": "advisor_worker.cli"}
JOBS_PER_STAGE = 6


def _photo(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.effect_mandelbrot((48, 32), (-2 + seed * 0.013, -1, 1, 1), 20).convert("RGB").save(
        buffer, format="JPEG"
    )
    return buffer.getvalue()


class LaunchdHost:
    """launchctl bootstrap/bootout for the runbook's plists, on a host without launchd."""

    def __init__(self, home: Path, repo: Repository) -> None:
        self.home = home
        self.repo = repo
        self.jobs: dict[str, WorkerProcess] = {}
        self.exit_codes: dict[str, int] = {}

    def path(self, text: str) -> Path:
        return Path(re.sub(r"^~", str(self.home), text))

    def run(self, command: tuple[str, ...]) -> None:
        verb, domain = command[1], " ".join(command[2:4])
        assert domain.startswith("gui/$(id -u)"), f"not a per-user domain: {command}"
        if verb == "bootstrap":
            self.bootstrap(self.path(command[4]))
        elif verb == "bootout":
            self.bootout(domain.removeprefix("gui/$(id -u)/"))
        else:
            pytest.fail(f"unexpected launchctl verb in the runbook: {command}")

    def bootstrap(self, plist_path: Path) -> None:
        job = plistlib.loads(plist_path.read_bytes())
        label = job["Label"]
        assert label not in self.jobs, f"{label} is already loaded (launchctl would refuse)"
        program, *args = job["ProgramArguments"]
        assert Path(program).is_absolute() and Path(program).name == "advisor-worker"
        assert args[:2] == ["run", "--variant"]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home), **job["EnvironmentVariables"]}
        # This host's BLAS rule, as for every process the suite starts (docs/testing.md);
        # macOS's launchd has no OpenBLAS to tell.
        env.setdefault("OPENBLAS_NUM_THREADS", os.environ.get("OPENBLAS_NUM_THREADS", "1"))
        log = Path(job["StandardOutPath"])
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [program, *args], env=env, cwd=job.get("WorkingDirectory", "/"),
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.jobs[label] = wait_until_ready(WorkerProcess(args[2], proc, log), self.repo, 120)

    def bootout(self, label: str) -> None:
        worker = self.jobs.pop(label)
        worker.proc.send_signal(signal.SIGTERM)
        self.exit_codes[label] = worker.proc.wait(timeout=120)

    def live(self) -> Counter[str]:
        return Counter(w.variant for w in self.jobs.values())

    def stop_all(self) -> None:
        for label in list(self.jobs):
            self.bootout(label)


@pytest.fixture
def site(tmp_path: Path, tiny_model_dir: Path) -> dict[str, str]:
    """A fresh embedded install: tiny model, the runbook's registry with adapters v1 and v2."""
    model = tiny_model_dir
    adapters = tmp_path / "adapters"
    registry_json = re.findall(r"^```json\n(.*?)^```", RUNBOOK.read_text(), re.M | re.S)[0]
    for seed, entry in enumerate(json.loads(registry_json)["variants"].values(), start=1):
        write_random_adapter(model, adapters / entry["adapter"], seed=seed)
    (adapters / "registry.json").write_text(registry_json)
    (tmp_path / "images").mkdir()
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}
    return env | {
        "HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "ADVISOR_DATA_DIR": str(tmp_path / "data"),
        "ADVISOR_BASE_MODEL": str(model),
        "ADVISOR_REGISTRY": str(adapters / "registry.json"),
        "ADVISOR_IMAGE_ROOTS": str(tmp_path / "images"),
        "ADVISOR_TEXT_LIMIT": "16",
        "ADVISOR_HEARTBEAT_INTERVAL": "1",
        "ADVISOR_WORKER_LIVE_WINDOW": "10",
        # A stage's jobs in one batch per worker (the plists carry it): fewer decode steps.
        "ADVISOR_WORKER_BATCH": str(JOBS_PER_STAGE),
    }


def _settings(env: dict[str, str]) -> Settings:
    return Settings(
        data_dir=Path(env["ADVISOR_DATA_DIR"]),
        base_model=env["ADVISOR_BASE_MODEL"],
        registry=Path(env["ADVISOR_REGISTRY"]),
        image_roots=[Path(env["ADVISOR_IMAGE_ROOTS"])],
        heartbeat_interval=1,
        worker_live_window=10,
        # Traffic follows each `rollout set` at once; a producer's default 3 s cache of the
        # weights would route the first jobs by the previous split (docs/rollout.md).
        weights_cache_seconds=0,
    )


def _run(command: tuple[str, ...], env: dict[str, str]) -> str:
    proc = run_command(PROGRAMS[command[0]], list(command[1:]), env, timeout=180)
    assert proc.returncode == 0, f"`{' '.join(command)}` exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def _positive(weights: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in weights.items() if v > 0}


def _set_weights(command: tuple[str, ...]) -> dict[str, float]:
    return {k: float(v) for k, _, v in (a.partition("=") for a in command[4:] if "=" in a)}


def test_the_runbook_runs_in_order_on_the_embedded_default(site: dict[str, str]) -> None:
    settings = _settings(site)
    assert settings.resolved_broker_url.startswith("sqla+sqlite")
    _run(("advisor", "db", "upgrade"), site)
    repo = Repository(engine_for(settings.resolved_database_url))
    rollouts = RolloutStore(repo.engine)
    host = LaunchdHost(Path(site["HOME"]), repo)
    # The runbook starts from a deployment that serves ansel on base.
    _run(("advisor-worker", "launchd", "--variant", "base", "--count", "1"), site)
    host.bootstrap(host.path("~/Library/LaunchAgents/org.mondrian-advisor.worker.base.1.plist"))
    sent: list[str] = []
    ran: list[str] = []
    try:
        with Client(settings) as client:
            for step in runbook_steps():
                ran += [" ".join(c) for c in step.commands]
                _execute(step, site, host, client, rollouts, sent)
            wait_until_final(repo, sent, timeout=120)
    finally:
        host.stop_all()

    assert len(ran) >= 40 and len(sent) >= 8 * JOBS_PER_STAGE
    assert all(code == 0 for code in host.exit_codes.values()), host.exit_codes
    jobs = [repo.get(job_id) for job_id in sent]
    failed = [(j.id, j.error_kind, j.error) for j in jobs if j.status != Status.SUCCEEDED]
    assert not failed, failed
    fingerprints: dict[str, set[str | None]] = {}
    for job in jobs:
        fingerprints.setdefault(job.variant, set()).add(job.adapter_fingerprint)
    assert fingerprints["base"] == {None}
    v1, v2 = fingerprints["fine_tuned"], fingerprints["fine_tuned_v2"]
    assert len(v1) == len(v2) == 1 and v1 != v2, "one fingerprint per adapter version"
    assert _positive(rollouts.get("ansel").weights) == {"base": 1.0}
    assert [e.kind for e in rollouts.history("ansel")][0] == "rollback"


def _execute(
    step: RunbookStep,
    env: dict[str, str],
    host: LaunchdHost,
    client: Client,
    rollouts: RolloutStore,
    sent: list[str],
) -> None:
    weights_set: dict[str, float] | None = None
    for command in step.commands:
        before = rollouts.get("ansel")
        if command[0] == "launchctl":
            host.run(command)
        elif command[0] == "rm":
            host.path(command[1]).unlink()
        else:
            output = _run(command, env)
            if command[:3] == ("advisor", "rollout", "set"):
                weights_set = _set_weights(command)
                assert rollouts.get("ansel").weights == pytest.approx(weights_set)
            elif command[:2] == ("advisor", "guard"):
                assert rollouts.get("ansel") == before, f"guard moved a healthy split:\n{output}"
            elif command[:3] == ("advisor", "rollout", "rollback"):
                weights_set = _positive(rollouts.get("ansel").weights)
                assert weights_set == {"base": 1.0}
    if step.kind == "workers":
        variant, count = step.target
        assert host.live()[variant] == count, f"{step.name}: {host.live()}"
    if weights_set is not None:
        _send_traffic(client, weights_set, host, sent)


def _send_traffic(
    client: Client, weights: dict[str, float], host: LaunchdHost, sent: list[str]
) -> None:
    """Ansel jobs under the new split: each lands on a weighted variant that has workers."""
    start = len(sent)
    handles = client.submit_many(
        SubmitItem(_photo(start + i), "ansel") for i in range(JOBS_PER_STAGE)
    )
    live = host.live()
    for handle in handles:
        assert handle.published, handle.publish_error
        assert weights.get(handle.variant, 0) > 0, (handle.variant, weights)
        assert handle.assignment == Assignment.SPLIT and live[handle.variant] > 0
    sent += [h.id for h in handles]
