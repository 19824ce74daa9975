"""Gateway fixtures: a live stack (tiny model, two real workers, the real `advisor-gateway`)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from jobs.settings import Settings
from producers.gateway import create_app
from producers.gateway.app import uvicorn_options
from store import migrate
from tests.conftest import TEST_VOCAB, free_port, shared_dir
from tests.support import WORKER_BIN, Env, Stack, eventually, jpeg, wait_for_http

__all__ = ["Stack", "jpeg", "wait_for_http"]  # the shared helpers, as gateway tests import them

TOKEN = "gateway-test-token"
# No worker serves this variant: jobs forced onto it stay queued (a deterministic "not yet").
IDLE_VARIANT = "canary"
# Small enough that tests exceed it with a few MB.
MAX_BODY_BYTES = 2_000_000


def follow(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """GET /jobs/{id} until the job is final."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


class ThreadGateway:
    """create_app(settings) served by uvicorn on a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        options = {**uvicorn_options(settings), "log_level": "warning"}
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, ws="none", lifespan="on",
            **options,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)

    def __enter__(self) -> ThreadGateway:
        self.thread.start()

        def started() -> bool:
            if self.server.started:
                return True
            assert self.thread.is_alive(), "the gateway thread died at start"
            return False

        eventually("the gateway thread to start", started, 20, poll=0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def _worker_tool(args: list[str], env: Env) -> None:
    out = subprocess.run([*WORKER_BIN, *args], env=env.full(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def stack_env(root: Path, model_dir: Path, database_url: str, broker_url: str) -> Env:
    registry = root / "adapters" / "registry.json"
    return Env(
        {
            "ADVISOR_DATA_DIR": str(root / "data"),
            "ADVISOR_DATABASE_URL": database_url,
            "ADVISOR_BROKER_URL": broker_url,
            "ADVISOR_BASE_MODEL": str(model_dir),
            "ADVISOR_REGISTRY": str(registry),
            "ADVISOR_IMAGE_ROOTS": str(root / "images"),
            "ADVISOR_TEXT_LIMIT": "16",  # ~290 tokens a critique: seconds, with progress
            "ADVISOR_MAX_OUTPUT_TOKENS": "2400",
            "ADVISOR_HEARTBEAT_INTERVAL": "1",
            "ADVISOR_WORKER_LIVE_WINDOW": "10",
            "ADVISOR_WEIGHTS_CACHE_SECONDS": "0",
            "ADVISOR_GATEWAY_TOKEN": TOKEN,
            "ADVISOR_GATEWAY_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            # Workers save what the model got (pixels and prompt) for the photo tests to read.
            "ADVISOR_MODEL_INPUT_DIR": str(root / "model-inputs"),
        }
    )


def settings_of(env: Env, **overrides: object) -> Settings:
    """The Settings a process started with `env` reads (tests build them directly)."""
    v = env.values
    values: dict[str, object] = {
        "data_dir": Path(v["ADVISOR_DATA_DIR"]),
        "database_url": v["ADVISOR_DATABASE_URL"],
        "broker_url": v["ADVISOR_BROKER_URL"],
        "base_model": v["ADVISOR_BASE_MODEL"],
        "registry": Path(v["ADVISOR_REGISTRY"]),
        "image_roots": [Path(v["ADVISOR_IMAGE_ROOTS"])],
        "max_output_tokens": int(v["ADVISOR_MAX_OUTPUT_TOKENS"]),
        "heartbeat_interval": 1,
        "worker_live_window": 10,
        "weights_cache_seconds": 0,
        "gateway_token": TOKEN,
        "gateway_max_body_bytes": MAX_BODY_BYTES,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model and a random PEFT adapter, built by `advisor-worker` in subprocesses
    (the test process itself stays MLX-free, like every producer); once per run."""

    def build(root: Path) -> None:
        env = Env({})
        _worker_tool(["build-tiny-model", str(root / "tiny"), "--vocab", str(TEST_VOCAB)], env)
        _worker_tool(
            ["make-adapter", str(root / "tiny"), str(root / "adapter"), "--format", "peft"], env
        )

    root = shared_dir(tmp_path_factory, f"gateway-model-first{TEST_VOCAB}", build)
    return root / "tiny", root / "adapter"


def write_registry(root: Path, adapter: Path) -> None:
    registry = root / "adapters" / "registry.json"
    registry.parent.mkdir(parents=True, exist_ok=True)
    entry = {"adapter": str(adapter), "advisors": ["ansel"]}
    variants = {"fine_tuned": entry, IDLE_VARIANT: {**entry, "description": "never served"}}
    registry.write_text(json.dumps({"variants": variants}))


@contextmanager
def live_stack(
    root: Path, tiny_checkpoint: tuple[Path, Path], variants: list[str], **env: str
) -> Iterator[Stack]:
    """Workers of `variants` and the real `advisor-gateway` on SQLite and the embedded broker
    in `root`, with `env` over stack_env's values; the gateway's log must hold no traceback."""
    model_dir, adapter = tiny_checkpoint
    (root / "images").mkdir()
    (root / "images" / "test.jpg").write_bytes(jpeg(0))
    write_registry(root, adapter)
    database_url = f"sqlite:///{root / 'advisor.db'}"
    migrate.upgrade(database_url)
    stack_values = stack_env(root, model_dir, database_url, f"sqla+sqlite:///{root / 'broker.db'}")
    stack_values.values.update(env)
    stack = Stack(root, stack_values, settings_of(stack_values))
    try:
        stack.start_processes(variants, gateway_port=free_port(), ready_path="/openapi.json")
        yield stack
    finally:
        stack.stop()
    # Every request the tests made was answered on purpose: no traceback in the gateway's log.
    log = stack.gateway_output()
    assert "Traceback" not in log, log[-5000:]


@pytest.fixture(scope="package")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: tuple[Path, Path]
) -> Iterator[Stack]:
    """The package's stack: a base and a fine_tuned worker, short critiques."""
    with live_stack(tmp_path_factory.mktemp("gateway-stack"), tiny_checkpoint,
                    ["base", "fine_tuned"]) as stack:  # fmt: skip
        yield stack


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"
