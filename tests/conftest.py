"""Shared fixtures: real SQLite, PostgreSQL, Redis, RabbitMQ (absent: skip locally, fail in CI)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("ADVISOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
IN_CI = os.environ.get("CI", "").lower() == "true"


def is_listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a service is absent locally; in CI (CI=true) its absence is a failure."""
    if is_listening(host, port):
        return
    message = f"{name} is not answering on {host}:{port}"
    if IN_CI:
        pytest.fail(message + " (CI=true: services are required)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'advisor.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards; never touches others."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    name = f"advisor_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{url}/{name}"
    from store.db import engine_for

    full = f"{url}/{name}"
    engine_for(full).dispose()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on SQLite and on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url".replace("postgresql", "postgres")))


@pytest.fixture
def migrated_url(database_url: str) -> str:
    from store import migrate

    migrate.upgrade(database_url)
    return database_url


@pytest.fixture
def redis_url() -> str:
    """A Redis database index of its own on the shared server, flushed before use."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    db = 1 + (os.getpid() % 14)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    client.close()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


@pytest.fixture
def rabbitmq_url() -> str:
    require_service("RabbitMQ", RABBIT_HOST, RABBIT_PORT)
    return f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}//"
