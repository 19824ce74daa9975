"""A live stack for hostile clients: the real `advisor-gateway` and a worker on PostgreSQL + Redis.

API keys exist (so the intake is authenticated), the limits are small enough to reach in a
test, and the operator token is set. The gateway's and the worker's logs are kept to check
that no request or message was answered by accident.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from jobs.contracts import Assignment
from producers.keys import KeyStore, Scope
from store import migrate
from store.db import engine_for
from store.models import Job
from store.submissions import NewJob
from tests.conftest import free_port, postgres_database
from tests.faults.servers import RedisServer
from tests.support import Env, Stack, WorkerProcess, wait_until_final

TOKEN = "hostile-operator-token"
IDLE = "canary"  # registered, never served: jobs forced onto it stay queued
MAX_BODY = 1_000_000
MAX_STREAMS = MAX_WAITS = 3
A = "/analyze"  # the intake, short for the case tables


@dataclass
class Keys:
    app: str  # intake, generous limits
    other: str  # intake, another client
    slow: str  # intake, 2 submits a minute
    single: str  # intake, 1 job in flight
    reader: str  # read-only
    revoked: str


@dataclass(kw_only=True)
class HostileStack(Stack):
    """The one stack helper with the gateway's API keys, and a single `base` worker."""

    keys: Keys

    @property
    def worker(self) -> WorkerProcess:
        return self.workers[0]

    def rows(self) -> int:
        return len(self.repo.find())

    def client(self, key: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, timeout=60, headers=headers, **kwargs)  # type: ignore[arg-type]

    def idle_job(self, submitted_by: str | None = None) -> str:
        """A queued job no worker will take (its variant is never served)."""
        sha = uuid.uuid4().hex * 2
        new = NewJob("ansel", sha, f"sha256:{sha}", "idle", IDLE, Assignment.FORCED, 0,
                     submitted_by=submitted_by)  # fmt: skip
        [(job, _)] = self.repo.create_jobs([new])
        return job.id

    def assert_alive(self) -> None:
        assert self.gateway is not None
        assert self.worker.proc.poll() is None, self.worker.output()[-3000:]
        assert self.gateway.proc.poll() is None, self.gateway.output()[-3000:]


def png_bomb(side: int = 30_000) -> bytes:
    """A valid PNG header claiming side x side pixels, with a body of a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))  # fmt: skip

    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    body = zlib.compress(b"\x00" * (side * 3 + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="package")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, adapter_dir: Path
) -> Iterator[HostileStack]:
    root = tmp_path_factory.mktemp("hostile")
    (root / "images").mkdir()
    cleanup = ExitStack()
    redis_server = RedisServer(root)
    redis_server.start()
    cleanup.callback(redis_server.stop)
    database_url = cleanup.enter_context(postgres_database("advisor_hostile"))
    migrate.upgrade(database_url)
    registry = root / "registry.json"
    entry = {"adapter": str(adapter_dir), "advisors": ["ansel"]}
    registry.write_text(json.dumps({"variants": {"fine_tuned": entry, IDLE: entry}}))
    values = {
        "ADVISOR_DATA_DIR": str(root / "data"),
        "ADVISOR_DATABASE_URL": database_url,
        "ADVISOR_BROKER_URL": redis_server.url,
        "ADVISOR_BASE_MODEL": str(tiny_model_dir),
        "ADVISOR_REGISTRY": str(registry),
        "ADVISOR_IMAGE_ROOTS": str(root / "images"),
        "ADVISOR_TEXT_LIMIT": "16",
        "ADVISOR_MAX_OUTPUT_TOKENS": "1500",
        "ADVISOR_HEARTBEAT_INTERVAL": "1",
        "ADVISOR_WORKER_LIVE_WINDOW": "8",
        "ADVISOR_TASK_TIME_LIMIT": "60",
        "ADVISOR_WEIGHTS_CACHE_SECONDS": "0",
        "ADVISOR_GATEWAY_TOKEN": TOKEN,
        "ADVISOR_GATEWAY_MAX_BODY_BYTES": str(MAX_BODY),
        "ADVISOR_MAX_IMAGE_BYTES": "500000",
        "ADVISOR_GATEWAY_MAX_STREAMS": str(MAX_STREAMS),
        "ADVISOR_GATEWAY_MAX_WAITS": str(MAX_WAITS),
        "ADVISOR_GATEWAY_LIMIT_CONCURRENCY": "32",
        "ADVISOR_GATEWAY_BODY_TIMEOUT_SECONDS": "2",
        "ADVISOR_GATEWAY_KEYS_REFRESH_SECONDS": "0.5",
        "ADVISOR_KEY_RATE_PER_MINUTE": "600",
    }
    env = Env(values)
    store = KeyStore(engine_for(database_url))
    keys = Keys(
        app=store.create("app")[1], other=store.create("other")[1],
        slow=store.create("slow", rate_per_minute=2)[1],
        single=store.create("single", max_in_flight=1)[1],
        reader=store.create("reader", Scope.READ)[1], revoked=store.create("gone")[1],
    )  # fmt: skip
    store.revoke("gone")
    stack = HostileStack(root, env, env.settings(), keys=keys)
    try:
        stack.start_processes(["base"], gateway_port=free_port())
        yield stack
    finally:
        stack.stop(timeout=30)
        cleanup.close()
    # Every request was answered on purpose: the gateway never logged a traceback.
    text = stack.gateway_output()
    assert "Traceback" not in text, text[-5000:]


def job_rows(stack: HostileStack, *criteria: object) -> list[Job]:
    return stack.repo.find(*criteria)


TALLY: dict[str, bool] = {}  # case or check -> handled as expected, in this process


def record(name: str, ok: bool) -> None:
    TALLY[name] = ok


def photo(seed: int, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    img = Image.effect_mandelbrot((64, 48), (-2 + seed * 0.01, -1, 1, 1), 30).convert("RGB")
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def headers_for(stack: HostileStack, key: str | None) -> dict[str, str]:
    if key is None:
        return {}
    token = TOKEN if key == "operator" else getattr(stack.keys, key, key)
    return {"Authorization": f"Bearer {token}"}


def wait_final(stack: HostileStack, ids: list[str], timeout: float = 90) -> list[Job]:
    return list(wait_until_final(stack.repo, ids, timeout).values())
