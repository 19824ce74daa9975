"""docs/configuration.md, generated from `Settings`: every variable, its type, default and bounds.

Names, types, defaults and bounds come from `Settings` itself; the meaning of each lives here
(`MEANINGS`), and `DERIVED` words the defaults that are computed. `advisor config --markdown`
prints the page; tests/jobs/test_settings_reference.py fails when the committed page drifts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from jobs.settings import DEFAULT_BASE_MODEL, Settings

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

MEANINGS: dict[str, str] = {
    "data_dir": "where the embedded database, broker, demo model and default registry live",
    "database_url": "or `postgresql+psycopg://user@host/db`; `advisor db upgrade` migrates it",
    "broker_url": "or `redis://host:6379/0`, `amqp://...`",
    "broker_ca_file": "CA bundle for `rediss://` / `amqps://` brokers (certificates are "
    "always verified)",
    "base_model": "model id or local directory; when set, it wins over the registry's `base_model`",
    "registry": "variants: adapter directories and advisors; when set, the file must exist",
    "image_roots": "`:`-separated directories image paths may come from; unset: a gateway "
    "bound to loopback with no API key reads paths relative to its working directory, any "
    "other gateway refuses paths (docs/photos.md)",
    "max_image_bytes": "refused at submit",
    "max_image_pixels": "refused at submit, pixels from the file's header",
    "model_image_pixels": "the model's pixel budget per image (448x448); the model's own "
    "processor maximum caps it further (a warning only when this is set above it)",
    "max_image_side": "removed (it bounded a longest side the model never saw); set, it stops "
    "the boot",
    "prompt_capture": "give the advisor the photo's camera, lens and exposure (EXIF)",
    "model_input_dir": "worker writes each job's model input there: `<job>.png` and "
    "`<job>.txt` (the prompt)",
    "max_output_tokens": "token cap per analysis; it must fit the schema's bound at "
    "`ADVISOR_TEXT_LIMIT`",
    "text_limit": "characters per text field of the analysis",
    "temperature": "sampling temperature of the critique",
    "worker_batch": "analyses one worker process generates at once; `1`: a batch of one",
    "plan_hook": "command run after each rollout plan step, rollback or abort (its environment "
    "names the advisor, variant, step, status and workers per queue); docs/rollouts.md",
    "plan_hook_timeout": "seconds the plan hook may run; a failure or timeout is logged and the "
    "guard goes on",
    "prefill_chunk": "prompt tokens a prefill step takes per row; decoding rows wait at most "
    "one such step for a joining job",
    "worker_memory_mb": "KV-cache budget for the batch rows (unset: 80% of free memory); a "
    "batch that does not fit is refused at start",
    "worker_remote_control": "`false`: workers answer only Celery's inspection commands; "
    "`true` allows shutdown, pool_restart, rate limits, revoke",
    "task_time_limit": "hard limit per analysis (s); soft limit and visibility timeout derive "
    "from it",
    "max_attempts": "a job that kills its worker this often fails as `poison`",
    "heartbeat_interval": "seconds between a worker's heartbeats",
    "worker_live_window": "a worker without a heartbeat this long (s) is dead: its jobs are "
    "re-queued, routing falls back to base",
    "weights_cache_seconds": "how long a producer keeps the rollout weights it read (s)",
    "router_salt": "salt of the sticky split's hash; changing it reshuffles every subject",
    "webhook_secret": "HMAC key of webhook signatures; unset: callbacks are refused",
    "webhook_allowed_hosts": "`,`-separated hosts callbacks may name (`h.example.com`, "
    "`*.example.com`, `*`); none: webhooks off",
    "webhook_timeout": "seconds for each of connect, send and the status line",
    "delivery_max_attempts": "attempts per notice before it is `undelivered`",
    "delivery_backoff_seconds": "wait before the first retry; each next one doubles (at most 1 h)",
    "notify_broker_url": "where completion tasks are published (the upstream app's broker)",
    "retention_days": "`advisor prune` (and its beat task) deletes stored images older than "
    "this that no queued or running job needs",
    "retention_prune_jobs": "the prune also deletes finished job rows older than the retention",
    "gateway_token": "the operator token (`Authorization: Bearer ...`) for the rollout "
    "endpoints and forced variants; unset: those are off",
    "gateway_max_body_bytes": "largest request body the gateway reads (413 beyond)",
    "gateway_require_keys": "`false`: intake is open until the first API key exists; `true`: "
    "a key (or the operator token) is required from the start",
    "gateway_keys_refresh_seconds": "how often a gateway re-reads the keys table: a "
    "revocation takes effect within this",
    "key_rate_per_minute": "submits per minute per API key, unless the key names its own",
    "key_max_in_flight": "jobs queued or running at once per API key, unless the key names its own",
    "gateway_max_streams": "event streams one gateway process holds open (503 beyond)",
    "gateway_max_waits": "`?wait` requests one gateway process holds (503 beyond)",
    "gateway_max_stream_seconds": "an event stream ends `expired` after this long",
    "gateway_body_timeout_seconds": "the whole request body must arrive within this (408)",
    "gateway_limit_concurrency": "connections at once (uvicorn; 503 beyond)",
    "gateway_keep_alive_seconds": "how long an idle keep-alive connection stays open",
    "log_level": "`DEBUG`, `INFO`, `WARNING` or `ERROR`",
}

# Defaults that are computed, in words.
DERIVED: dict[str, str] = {
    "data_dir": "`~/.local/share/mondrian-advisor`",
    "database_url": "`sqlite:///$ADVISOR_DATA_DIR/advisor.db`",
    "broker_url": "`sqla+sqlite:///$ADVISOR_DATA_DIR/broker.db`",
    "base_model": f"the registry's `base_model`, else `{DEFAULT_BASE_MODEL}`",
    "registry": "`$ADVISOR_DATA_DIR/adapters/registry.json` if that file exists, else base only",
    "broker_ca_file": "the system's CAs",
    "notify_broker_url": "the service's own broker",
    "worker_memory_mb": "80% of free memory",
}

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _default(name: str, field: FieldInfo) -> str:
    if name in DERIVED:
        return DERIVED[name]
    value: Any = field.get_default(call_default_factory=True)
    if value is None or value == [] or value is PydanticUndefined:
        return "(none)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _kind(name: str, field: FieldInfo) -> str:
    text = str(field.annotation).replace("typing.", "").replace("pathlib.", "")
    text = text.replace("pydantic.types.", "").replace("<class '", "").replace("'>", "")
    bounds = [
        f"{sign} {getattr(m, key)}" for m in field.metadata for key, sign in _BOUNDS
        if getattr(m, key, None) is not None
    ]  # fmt: skip
    if "NoDecode" in text or name in ("image_roots", "webhook_allowed_hosts"):
        text = "list"
    text = text.replace("Annotated[", "").replace(" | None", ", optional")
    return f"{text}{' ' + ', '.join(bounds) if bounds else ''}"


def render() -> str:
    """The whole page, as committed in docs/configuration.md."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from jobs/settings.py by `advisor config --markdown > "
        "docs/configuration.md`; do not edit by hand. -->",
        "",
        "Every setting is an environment variable with the `ADVISOR_` prefix, read in one "
        "place (`jobs/settings.py`). A value that does not parse stops every process with one "
        "line naming the variable. Run `advisor db upgrade` to create or migrate the schema "
        "for `ADVISOR_DATABASE_URL`.",
        "",
        "| variable | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        lines.append(
            f"| `ADVISOR_{name.upper()}` | {_kind(name, field)} | {_default(name, field)} | "
            f"{MEANINGS[name]} |"
        )
    return "\n".join(lines) + "\n"
