"""Where a benchmark runs: Redis + PostgreSQL, or the embedded default (SQLite + kombu sqla)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text

from jobs.settings import Settings
from store import migrate

# Database 15: the test fixtures use 1-14, and each benchmark flushes its own database first.
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
DEFAULT_POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BENCH_DATABASE = "advisor_bench"


@dataclass(frozen=True)
class Target:
    """One broker + database pair; `fresh()` gives empty, migrated state under `data_dir`."""

    name: str
    redis_url: str = ""  # empty: the embedded broker
    postgres_admin_url: str = ""  # empty: a SQLite file

    @property
    def key(self) -> str:
        return "embedded" if self.is_embedded else "redis-pg"

    @property
    def is_embedded(self) -> bool:
        return not self.redis_url

    def fresh(self, data_dir: Path, **overrides: Any) -> Settings:
        data_dir.mkdir(parents=True, exist_ok=True)
        database = ""
        if self.postgres_admin_url:
            database = recreate_postgres(self.postgres_admin_url, BENCH_DATABASE)
        if self.redis_url:
            redis.Redis.from_url(self.redis_url).flushdb()
        settings = Settings(
            data_dir=data_dir, database_url=database, broker_url=self.redis_url, **overrides
        )
        migrate.upgrade(settings.resolved_database_url)
        return settings


def recreate_postgres(admin_url: str, name: str) -> str:
    """Drop and create database `name`; returns its URL."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a worker subprocess serving `settings` (ADVISOR_* replaced whole)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}
    env.update(
        HF_HUB_OFFLINE="1",
        ADVISOR_DATA_DIR=str(settings.data_dir),
        ADVISOR_DATABASE_URL=settings.resolved_database_url,
        ADVISOR_BROKER_URL=settings.resolved_broker_url,
        ADVISOR_TEXT_LIMIT=str(settings.text_limit),
        ADVISOR_TEMPERATURE=str(settings.temperature),
        ADVISOR_MAX_OUTPUT_TOKENS=str(settings.max_output_tokens),
    )
    if settings.base_model is not None:
        env["ADVISOR_BASE_MODEL"] = settings.base_model
    if settings.registry is not None:
        env["ADVISOR_REGISTRY"] = str(settings.registry)
    env.update(extra)
    return env
