"""What the numbers were measured on: machine, operating system, library and server versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

PACKAGES = ("mlx", "mlx-vlm", "mlx-metal", "celery", "kombu", "redis", "sqlalchemy", "psycopg",
            "llguidance")  # fmt: skip


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3


def os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                name = line.split("=", 1)[1].strip().strip('"')
                return f"{name} (kernel {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            # The client library, told apart from the Redis server below.
            found["redis-py" if name == "redis" else name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def redis_server(url: str) -> str:
    try:
        return str(redis.Redis.from_url(url, socket_connect_timeout=2).info()["redis_version"])
    except redis.RedisError as exc:
        return f"unavailable ({type(exc).__name__})"


def postgres_server(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.scalar(text("SHOW server_version")))
    except Exception as exc:  # noqa: BLE001 - any failure only means "not measured"
        return f"unavailable ({type(exc).__name__})"
    finally:
        engine.dispose()


def describe(redis_url: str, postgres_url: str) -> list[tuple[str, str]]:
    """(label, value) rows for the document's header."""
    rows = [
        ("CPU", f"{cpu_model()}, {os.cpu_count()} logical cores"),
        ("RAM", f"{ram_gib():.1f} GiB"),
        ("OS", os_name()),
    ]
    rows += [(name, version) for name, version in package_versions().items()]
    rows += [("Redis server", redis_server(redis_url)),
             ("PostgreSQL server", postgres_server(postgres_url))]  # fmt: skip
    return rows


def summary() -> str:
    """One line: CPU, cores, memory, OS, python, numpy and scipy."""
    versions = {name: metadata.version(name) for name in ("numpy", "scipy")}
    return (f"{cpu_model()}, {os.cpu_count()} logical cores, {ram_gib():.1f} GiB, {os_name()}, "
            f"python {platform.python_version()}, numpy {versions['numpy']}, "
            f"scipy {versions['scipy']}")  # fmt: skip
