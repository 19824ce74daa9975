"""Producer fixtures: a registry with a fine-tuned variant, settings, photos, heartbeats, queues."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image
from pydantic import SecretStr

from jobs.contracts import queue_for
from jobs.settings import Settings
from store.db import engine_for
from store.repository import Repository
from tests.conftest import migrated_copy
from tests.faults.servers import RedisServer

__all__ = ["RedisServer"]  # the one private Redis helper, as producer tests import it

FINE_TUNED_ADVISOR = "ansel"  # the registry's fine_tuned variant serves only this advisor
OTHER_ADVISOR = "weston"


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    """fine_tuned serves ansel; its adapter directory only has to exist on the producer side."""
    (tmp_path / "adapters" / "ft").mkdir(parents=True)
    path = tmp_path / "adapters" / "registry.json"
    entry = {"adapter": "ft", "advisors": [FINE_TUNED_ADVISOR]}
    path.write_text(json.dumps({"variants": {"fine_tuned": entry}}))
    return path


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    return root


@pytest.fixture
def sqlite_db(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database (a copy of one migrated once: `migrated_copy`)."""
    return migrated_copy(sqlite_url, tmp_path_factory)


def make_settings(
    tmp_path: Path, database_url: str, registry: Path, broker_url: str = "", **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "broker_url": broker_url,
        "registry": registry,
        "image_roots": [tmp_path / "images"],
        **extra,
    }
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a subprocess's get_settings() equal `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}
    for name, value in settings.model_dump(exclude={"gateway_token"}).items():
        if value is None:
            continue  # unset: the default (None) again
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, list):
            value = json.dumps([str(v) for v in value])
        env[f"ADVISOR_{name.upper()}"] = str(value)
    return env


def photo(seed: int, size: tuple[int, int] = (32, 24)) -> bytes:
    """A small PNG, different for every seed."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (seed % 256, (seed // 256) % 256, 99)).save(buffer, format="PNG")
    return buffer.getvalue()


def beat(database_url: str, variant: str, worker: str | None = None) -> None:
    """A live heartbeat for `variant`, as a worker would write it."""
    Repository(engine_for(database_url)).beat(
        {
            "worker": worker or f"test-{variant}",
            "variant": variant,
            "queue": queue_for(variant),
            "host": "test",
            "pid": os.getpid(),
            "base_model": "test-model",
        }
    )


def queued_requests(redis_url: str, variant: str) -> list[dict[str, Any]]:
    """The kwargs of every message waiting in `variant`'s queue (oldest first)."""
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.lrange(queue_for(variant), 0, -1)
    finally:
        client.close()
    requests = []
    for item in reversed(raw):  # kombu LPUSHes and BRPOPs: the list's tail is the oldest
        message = json.loads(item)
        assert message["headers"]["task"] == "advisor.analyze"
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        requests.append(kwargs)
    return requests


def run_python(code: str, env: dict[str, str], timeout: float = 30) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, so it can be stopped and started again."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
