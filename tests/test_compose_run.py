"""The compose stack's project services, run natively: the same commands, flags and variables.

No Docker engine is needed: each service of our images runs its compose `command` with its
compose `environment`, the compose network's `postgres` and `redis` being this machine's
(a fresh database, a Redis index of its own) and each volume a temporary directory. Then the
stack does its job: a photo posted to the gateway is analysed by the CPU worker.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx
from PIL import Image

from store.db import engine_for
from store.repository import Repository
from tests.compose_model import OUR_IMAGES, SECRETS, command_argv, compose
from tests.conftest import is_listening
from tests.support import WorkerProcess, eventually, wait_until_ready

BIN = Path(sys.executable).parent
PROFILES_RUN = ("cpu-worker",)


def _service_env(service: dict[str, object], overrides: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADVISOR_", "FLOWER_"))}
    declared = service.get("environment") or {}
    assert isinstance(declared, dict)
    # `KEY:` with no value passes the host's value through; the host here sets none.
    env.update({k: str(v) for k, v in declared.items() if v not in (None, "")})
    env.update({k: v for k, v in overrides.items() if k in declared or k == "HOME"})
    return env


def _volumes(service: dict[str, object], mounts: dict[str, Path]) -> dict[str, Path]:
    """Container path -> this machine's directory, for the service's declared volumes."""
    mapped = {}
    for volume in service.get("volumes") or []:  # type: ignore[attr-defined]
        target = str(volume).split(":")[1]
        mapped[target] = mounts[target]
    return mapped


def _localise(text: str, volumes: dict[str, Path]) -> str:
    for target, local in volumes.items():
        if text == target or text.startswith(target + "/"):
            return str(local) + text[len(target) :]
    return text


def _photo() -> bytes:
    buffer = io.BytesIO()
    Image.effect_mandelbrot((64, 48), (-2, -1, 1, 1), 30).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, **kwargs: object) -> None:
    def answers() -> bool:
        assert proc.poll() is None, f"{url}: server exited {proc.returncode}:\n{log.read_text()}"
        return httpx.get(url, timeout=2, **kwargs).status_code < 500  # type: ignore[arg-type]

    eventually(f"{url} to answer", answers, 60, poll=0.3, errors=(httpx.TransportError,),
               context=lambda: log.read_text()[-3000:])  # fmt: skip


def test_the_compose_services_run_natively_and_analyse_a_photo(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    for port in (8000, 5555):
        assert not is_listening("127.0.0.1", port), f"port {port} is taken; compose publishes it"
    services = {
        name: s
        for name, s in compose(SECRETS)["services"].items()
        if OUR_IMAGES.match(s.get("image", ""))
        and set(s.get("profiles", PROFILES_RUN)) & set(PROFILES_RUN)
    }
    assert set(services) == {"migrate", "gateway", "sweep", "flower", "tiny-model", "cpu-worker"}
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    (adapters / "registry.json").write_text('{"variants": {}}')
    mounts = {"/app/adapters": adapters, "/models": tmp_path / "models"}
    overrides = {
        "ADVISOR_DATABASE_URL": postgres_url,
        "ADVISOR_BROKER_URL": redis_url,
        "HOME": str(tmp_path),
        "ADVISOR_HEARTBEAT_INTERVAL": "1",
    }
    repo = Repository(engine_for(postgres_url))
    logs = tmp_path / "logs"
    logs.mkdir()

    def argv_env(name: str) -> tuple[list[str], dict[str, str]]:
        service = services[name]
        volumes = _volumes(service, mounts)
        program, *args = command_argv(service["command"])
        env = {k: _localise(v, volumes) for k, v in _service_env(service, overrides).items()}
        env["ADVISOR_HEARTBEAT_INTERVAL"] = "1"
        return [str(BIN / program), *(_localise(a, volumes) for a in args)], env

    def run_once(name: str, command: list[str] | None = None) -> str:
        argv, env = argv_env(name)
        if command is not None:
            argv = [str(BIN / command[0]), *command[1:]]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"{name}: {argv} exited {proc.returncode}:\n{proc.stderr}"
        return proc.stdout

    def start(name: str) -> tuple[subprocess.Popen[bytes], Path]:
        argv, env = argv_env(name)
        log = logs / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        stack.callback(_stop, proc)
        return proc, log

    with ExitStack() as stack:
        run_once("migrate")
        # The gateway requires API keys from the start; the operator makes one.
        key = run_once("gateway", ["advisor", "keys", "create", "compose-test"]).strip()
        run_once("tiny-model")
        proc, log = start("cpu-worker")
        wait_until_ready(WorkerProcess("base", proc, log), repo, 120)
        gateway, gateway_log = start("gateway")
        _wait_http("http://127.0.0.1:8000/health", gateway, gateway_log)
        sweep, sweep_log = start("sweep")
        flower, flower_log = start("flower")
        auth = (SECRETS["FLOWER_USER"], SECRETS["FLOWER_PASSWORD"])
        _wait_http("http://127.0.0.1:5555/healthcheck", flower, flower_log, auth=auth)

        health = httpx.get("http://127.0.0.1:8000/health", timeout=10).json()
        assert health["status"] == "ok", health
        image = base64.b64encode(_photo()).decode()
        response = httpx.post(
            "http://127.0.0.1:8000/analyze?wait=120",
            json={"image_base64": image, "advisor": "ansel"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=150,
        )
        assert response.status_code == 200, response.text
        anonymous = httpx.post(
            "http://127.0.0.1:8000/analyze", json={"image_base64": image, "advisor": "ansel"},
            timeout=30,
        )  # fmt: skip
        assert anonymous.status_code == 401, anonymous.text
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["status"] == "succeeded" and job["variant"] == "base", job
        assert httpx.get("http://127.0.0.1:5555/api/workers", timeout=10).status_code == 401
        listing = "http://127.0.0.1:5555/api/workers?refresh=1"
        workers = eventually(
            "flower to list a worker",
            lambda: httpx.get(listing, auth=auth, timeout=60).json(),
            30,
            poll=1,
        )
        assert any(name.startswith("base-") for name in workers), workers
        assert sweep.poll() is None, sweep_log.read_text()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
