"""Settings: the one reader of the environment (ADVISOR_* variables)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from jobs.errors import ConfigError

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "mondrian-advisor"
DEFAULT_BASE_MODEL = "mlx-community/Qwen3-VL-4B-Instruct-4bit"


class Settings(BaseSettings):
    """Every knob of the service. Defaults run the embedded mode: SQLite, no broker server."""

    model_config = SettingsConfigDict(env_prefix="ADVISOR_", frozen=True, extra="forbid")

    data_dir: Path = DEFAULT_DATA_DIR
    # Empty means "the embedded default under data_dir"; see the resolved_* properties.
    database_url: str = ""
    broker_url: str = ""

    # TLS brokers (rediss://, amqps://) verify the server's certificate against this CA
    # bundle, or the system's when unset.
    broker_ca_file: Path | None = None

    base_model: str = DEFAULT_BASE_MODEL
    registry: Path = Path("adapters/registry.json")
    # NoDecode: the raw environment string reaches _split_roots, so "a:b" works, not only JSON.
    image_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    max_image_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=64_000_000, gt=0)
    max_image_side: int = Field(default=1024, ge=64)

    max_output_tokens: int = Field(default=1800, ge=64)
    text_limit: int = Field(default=320, ge=16, le=4000)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)

    # Analyses one worker process generates at once (rows of one continuous batch);
    # 1 is the single-job path. See README "Worker throughput".
    worker_batch: int = Field(default=4, ge=1, le=64)
    # KV-cache memory the worker may use for its B rows; None: derived from the machine.
    worker_memory_mb: int | None = Field(default=None, gt=0)

    # False: workers answer only Celery's inspection commands (no remote shutdown,
    # pool_restart, rate or time limit changes, revoke); True: all of them.
    worker_remote_control: bool = False

    task_time_limit: int = Field(default=600, ge=5)
    max_attempts: int = Field(default=3, ge=1)
    heartbeat_interval: float = Field(default=5.0, gt=0)
    worker_live_window: float = Field(default=30.0, gt=0)
    weights_cache_seconds: float = Field(default=3.0, ge=0)
    router_salt: str = "mondrian"

    # `advisor prune` (and its beat task): stored images older than this many days that no
    # queued or running job needs are deleted; job rows only with --jobs (or the setting).
    retention_days: float = Field(default=30.0, gt=0)
    retention_prune_jobs: bool = False

    gateway_token: SecretStr | None = None
    gateway_max_body_bytes: int = Field(default=30 * 1024 * 1024, gt=0)
    # False: intake is open until the first API key exists (`advisor keys create`), then every
    # intake call needs one; True: a key (or the operator token) is required from the start.
    gateway_require_keys: bool = False
    # How often a gateway re-reads the keys table: a revocation takes effect within this.
    gateway_keys_refresh_seconds: float = Field(default=2.0, gt=0, le=60)
    # Per API key, unless the key names its own: submits per minute (a token bucket per
    # gateway process, bursts up to the same number) and jobs queued or running at once.
    key_rate_per_minute: int = Field(default=60, ge=1)
    key_max_in_flight: int = Field(default=20, ge=1)
    # Bounded resources of one gateway process. Event streams and ?wait requests each hold a
    # connection and poll the database: beyond these caps they are answered 503.
    gateway_max_streams: int = Field(default=64, ge=1)
    gateway_max_waits: int = Field(default=64, ge=1)
    gateway_max_stream_seconds: float = Field(default=900.0, ge=1)  # then `expired`, closed
    gateway_body_timeout_seconds: float = Field(default=60.0, gt=0)  # whole body, else 408
    # uvicorn: connections at once (503 beyond) and how long an idle keep-alive one stays.
    gateway_limit_concurrency: int = Field(default=256, ge=4)
    gateway_keep_alive_seconds: float = Field(default=5.0, gt=0, le=300)
    log_level: str = "INFO"

    @field_validator("image_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        # Accept "a:b" (PATH style) as well as a JSON list.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part for part in value.split(":") if part]
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        if url and not url.startswith(("sqlite", "postgresql")):
            raise ValueError(
                f"ADVISOR_DATABASE_URL {url.split(':', 1)[0]!r}: use sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST/DB"
            )
        return url

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, url: str) -> str:
        schemes = ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://", "sqla+")
        if url and not url.startswith(schemes):
            raise ValueError(
                f"ADVISOR_BROKER_URL scheme {url.split(':', 1)[0]!r} is not supported; "
                "use redis://, rediss:// (TLS), amqp://, amqps:// (TLS) or sqla+sqlite:///PATH"
            )
        return url

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        if level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("ADVISOR_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return level.upper()

    @model_validator(mode="after")
    def _live_window_outlasts_heartbeat(self) -> Settings:
        if self.worker_live_window <= self.heartbeat_interval:
            raise ValueError(
                "ADVISOR_WORKER_LIVE_WINDOW must exceed ADVISOR_HEARTBEAT_INTERVAL, "
                "else live workers look dead between beats"
            )
        return self

    @model_validator(mode="after")
    def _streams_leave_room_for_other_requests(self) -> Settings:
        if self.gateway_max_streams + self.gateway_max_waits >= self.gateway_limit_concurrency:
            raise ValueError(
                "ADVISOR_GATEWAY_MAX_STREAMS + ADVISOR_GATEWAY_MAX_WAITS must stay below "
                "ADVISOR_GATEWAY_LIMIT_CONCURRENCY, else streams alone can fill the gateway"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'advisor.db'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def soft_time_limit(self) -> int:
        """Soft limit: leaves time to record a timeout before the hard kill."""
        return max(1, self.task_time_limit - max(2, self.task_time_limit // 10))

    @property
    def visibility_timeout(self) -> int:
        """Redis redelivers unacked tasks after this; it must outlast the hard limit."""
        return self.task_time_limit * 2 + 60

    @property
    def is_embedded(self) -> bool:
        return self.resolved_broker_url.startswith("sqla+")


@functools.cache
def get_settings() -> Settings:
    """The process-wide Settings, read once from the environment."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(f"Invalid ADVISOR_* setting: {describe_invalid(exc)}") from None
    except (SettingsError, ValueError) as exc:
        raise ConfigError(f"Invalid ADVISOR_* setting: {type(exc).__name__}") from None


def describe_invalid(exc: ValidationError) -> str:
    """Each refused setting by its variable name and why, never with the value given.

    pydantic's own text quotes the input (a URL with its password) and adds a help link.
    """
    parts = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = error.get("loc") or ()
        name = f"ADVISOR_{str(loc[0]).upper()}" if loc else "settings"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(message if message.startswith(name) else f"{name}: {message}")
    return "; ".join(parts) or "invalid"


def mask_url(url: str) -> str:
    """A URL with its password replaced, safe for logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
