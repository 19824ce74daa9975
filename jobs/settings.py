"""Settings: the one reader of the environment (ADVISOR_* variables)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Annotated

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from jobs.errors import ConfigError

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "mondrian-advisor"
DEFAULT_BASE_MODEL = "mlx-community/Qwen3-VL-4B-Instruct-4bit"
# An allow-list entry: `*`, `*.example.com`, a host name, an IPv4 or a bracketless IPv6 address.
_HOST_ENTRY = re.compile(r"^(\*|(\*\.)?[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?|[0-9a-f:.]+)$")


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

    # Unset: the registry's `base_model`, else DEFAULT_BASE_MODEL (jobs.variants decides).
    base_model: str | None = None
    # Unset: $data_dir/adapters/registry.json if it exists, else base only (find_registry).
    registry: Path | None = None
    # NoDecode: the raw environment string reaches _split_roots, so "a:b" works, not only JSON.
    image_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    max_image_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=64_000_000, gt=0)
    # The model's pixel budget per image: 448x448 = 196 image tokens on Qwen3-VL (one per
    # 32x32 pixels). The model's own processor maximum caps it further.
    model_image_pixels: int = Field(default=448 * 448, ge=32 * 32)
    # Removed (it bounded a longest side the model never saw); set, it stops the boot.
    max_image_side: int | None = Field(default=None, exclude=True)
    # Camera, lens and exposure from EXIF go into the advisor's prompt.
    prompt_capture: bool = True
    # When set, the worker writes each job's model input here: <job>.png and <job>.txt.
    model_input_dir: Path | None = None

    # Must fit the generation schema's bound at the default text_limit (about 6,100
    # characters, ~1,900 tokens of prose); 1,800 cut off valid outputs of a verbose model.
    max_output_tokens: int = Field(default=2400, ge=64)
    text_limit: int = Field(default=320, ge=16, le=4000)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)

    # Analyses one worker process generates at once (rows of one continuous batch);
    # 1 is a batch of one (the same decode path). See README "Worker throughput".
    worker_batch: int = Field(default=4, ge=1, le=64)
    # Prompt tokens a prefill step takes per row; decoding rows wait at most one such step
    # for a joining job. Smaller: steadier decoding; larger: fewer, more efficient steps.
    prefill_chunk: int = Field(default=256, ge=16)
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

    # Outcome notices: signed webhooks (none allowed until hosts are listed) and completion
    # tasks, published to ADVISOR_NOTIFY_BROKER_URL (empty: the service's own broker).
    webhook_secret: SecretStr | None = None
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_timeout: float = Field(default=5.0, gt=0, le=60)
    delivery_max_attempts: int = Field(default=8, ge=1, le=30)
    # The first retry waits this long; each later one twice as long as the one before.
    delivery_backoff_seconds: float = Field(default=10.0, gt=0)
    notify_broker_url: str = ""

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
    # A command run after each rollout plan step (and when a plan ends), to resize the
    # queues: ADVISOR_PLAN_ADVISOR, _VARIANT, _STEP (percent), _STATUS and _WORKERS (JSON,
    # workers per variant; also _WORKERS_<VARIANT>) are in its environment. It runs beside
    # the guard with `plan_hook_timeout` seconds; a failure is logged, the guard goes on.
    plan_hook: str | None = None
    plan_hook_timeout: float = Field(default=60.0, gt=0, le=3600)
    log_level: str = "INFO"

    @field_validator("base_model", "registry", "plan_hook", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `ADVISOR_REGISTRY=` (as compose passes an unset variable through) means unset.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("image_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        # Accept "a:b" (PATH style) as well as a JSON list.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part for part in value.split(":") if part]
        return value

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        # "a.example.com, *.b.example.com" or whitespace-separated, as well as a JSON list.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part for part in re.split(r"[,\s]+", value) if part]
        return value

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _known_hosts(cls, hosts: list[str]) -> list[str]:
        entries = [host.strip().lower().rstrip(".") for host in hosts]
        for entry in entries:
            if not _HOST_ENTRY.match(entry):
                raise ValueError(
                    f"ADVISOR_WEBHOOK_ALLOWED_HOSTS entry {entry!r} is not a host name, "
                    "an address, `*.domain` or `*`"
                )
        return entries

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        if url and not url.startswith(("sqlite", "postgresql")):
            raise ValueError(
                f"ADVISOR_DATABASE_URL {url.split(':', 1)[0]!r}: use sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST/DB"
            )
        return url

    @field_validator("broker_url", "notify_broker_url")
    @classmethod
    def _known_broker(cls, url: str, info: ValidationInfo) -> str:
        schemes = ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://", "sqla+")
        if url and not url.startswith(schemes):
            name = f"ADVISOR_{str(info.field_name).upper()}"
            raise ValueError(
                f"{name} scheme {url.split(':', 1)[0]!r} is not supported; "
                "use redis://, rediss:// (TLS), amqp://, amqps:// (TLS) or sqla+sqlite:///PATH"
            )
        return url

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        if level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("ADVISOR_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return level.upper()

    @field_validator("max_image_side")
    @classmethod
    def _removed_side(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError(
                "ADVISOR_MAX_IMAGE_SIDE is gone: the model's image is sized by "
                "ADVISOR_MODEL_IMAGE_PIXELS, a pixel budget (default 200704 = 448x448)"
            )
        return value

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
    def default_registry(self) -> Path:
        """Where the registry is looked for when ADVISOR_REGISTRY is unset: absolute."""
        return (self.data_dir / "adapters" / "registry.json").expanduser().resolve()

    @property
    def resolved_notify_broker_url(self) -> str:
        return self.notify_broker_url or self.resolved_broker_url

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
        raise ConfigError(
            f"Invalid ADVISOR_* setting: {describe_invalid(exc)}; fix or unset it "
            "(docs/configuration.md lists every setting)"
        ) from None
    except (SettingsError, ValueError) as exc:
        raise ConfigError(
            f"Invalid ADVISOR_* setting ({type(exc).__name__}): a list or JSON value does not "
            "parse; fix or unset it (docs/configuration.md lists every setting)"
        ) from None


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
