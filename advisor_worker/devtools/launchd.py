"""launchd LaunchAgent plists for Mac worker hosts: one job per worker process, one variant each."""

from __future__ import annotations

import argparse
import json
import os
import plistlib
import re
import sys
from pathlib import Path

from pydantic import SecretStr

from jobs.contracts import is_valid_variant_name
from jobs.errors import ConfigError
from jobs.settings import Settings, get_settings, mask_url
from jobs.variants import find_registry

__all__ = [
    "LABEL_PREFIX",
    "REQUIRED_ENV",
    "add_arguments",
    "exit_timeout_for",
    "label_for",
    "launchd_main",
    "plists",
    "render_plist",
    "worker_env",
]

LABEL_PREFIX = "org.mondrian-advisor"
PROGRAM_NAME = "advisor-worker"
# What a worker on another host needs to find the shared services; its model and registry
# come from ADVISOR_REGISTRY (or the data dir's registry) and ADVISOR_BASE_MODEL when set.
REQUIRED_ENV = (
    "ADVISOR_DATABASE_URL",
    "ADVISOR_BROKER_URL",
)
# Interactive: no launchd CPU/IO throttling. Analyses are user-requested and latency-bound,
# and the CPU side of decoding (sampling, grammar masks) feeds the GPU token by token.
PROCESS_TYPES = ("Interactive", "Standard", "Adaptive", "Background")
DEFAULT_PROCESS_TYPE = "Interactive"
# A crash-looping worker reloads its model on every start; 30 s apart keeps the host usable.
THROTTLE_SECONDS = 30
# Beyond the time limit: record the outcome, close the model, clear the MLX streams.
SHUTDOWN_MARGIN_SECONDS = 60
DEFAULT_TASK_TIME_LIMIT: int = Settings.model_fields["task_time_limit"].default
DEFAULT_OUT = Path.home() / "Library" / "LaunchAgents"
DEFAULT_LOG_DIR = Path.home() / "Library" / "Logs" / "mondrian-advisor"
# Gateway settings have no business in a worker's plist (the token is a secret).
_NOT_FOR_WORKERS = frozenset({"gateway_token", "gateway_max_body_bytes"})


def label_for(variant: str, index: int, label_prefix: str = LABEL_PREFIX) -> str:
    return f"{label_prefix}.worker.{variant}.{index}"


def exit_timeout_for(task_time_limit: int) -> int:
    """Seconds launchd waits after SIGTERM (Celery's warm shutdown) before SIGKILL."""
    return task_time_limit + SHUTDOWN_MARGIN_SECONDS


def render_plist(
    variant: str,
    index: int,
    *,
    program: str,
    env: dict[str, str],
    log_dir: Path,
    label_prefix: str = LABEL_PREFIX,
    process_type: str = DEFAULT_PROCESS_TYPE,
    working_dir: Path | None = None,
) -> bytes:
    """One LaunchAgent running `advisor-worker run --variant V`, restarted only if it crashes."""
    _check_job(variant, index, program, env, log_dir, process_type)
    label = label_for(variant, index, label_prefix)
    job: dict[str, object] = {
        "Label": label,
        "ProgramArguments": [program, "run", "--variant", variant],
        "EnvironmentVariables": dict(sorted(env.items())),
        "RunAtLoad": True,
        # A clean exit (warm shutdown, bootout) stays down; a crash or non-zero exit restarts.
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": THROTTLE_SECONDS,
        "ExitTimeOut": exit_timeout_for(_task_time_limit(env)),
        "ProcessType": process_type,
        "StandardOutPath": str(log_dir / f"{label}.out.log"),
        "StandardErrorPath": str(log_dir / f"{label}.err.log"),
    }
    if working_dir is not None:
        job["WorkingDirectory"] = str(working_dir)
    return plistlib.dumps(job, fmt=plistlib.FMT_XML, sort_keys=True)


def plists(
    variant: str,
    count: int,
    *,
    program: str,
    env: dict[str, str],
    log_dir: Path,
    label_prefix: str = LABEL_PREFIX,
    process_type: str = DEFAULT_PROCESS_TYPE,
    working_dir: Path | None = None,
) -> dict[str, bytes]:
    """File name -> plist for workers 1..count of `variant`; same inputs, same bytes."""
    if count < 1:
        raise ConfigError(f"--count must be at least 1, got {count}")
    files = {}
    for index in range(1, count + 1):
        label = label_for(variant, index, label_prefix)
        files[f"{label}.plist"] = render_plist(
            variant, index, program=program, env=env, log_dir=log_dir,
            label_prefix=label_prefix, process_type=process_type, working_dir=working_dir,
        )  # fmt: skip
    return files


def worker_env(settings: Settings) -> dict[str, str]:
    """The ADVISOR_* a launchd job needs: the services, the model, and every setting set here.

    launchd starts jobs with an almost empty environment and `/` as the working directory,
    so paths are made absolute and the settings of the generating shell are carried over.
    """
    env = {
        "ADVISOR_DATABASE_URL": settings.resolved_database_url,
        "ADVISOR_BROKER_URL": settings.resolved_broker_url,
        "ADVISOR_DATA_DIR": str(settings.data_dir.expanduser().resolve()),
        # Pinned: each plist says how many analyses its process generates at once.
        "ADVISOR_WORKER_BATCH": str(settings.worker_batch),
    }
    # The registry this shell finds, pinned; none found: the worker looks where this shell did.
    registry = find_registry(settings).path
    if registry is not None:
        env["ADVISOR_REGISTRY"] = str(registry)
    if settings.base_model:
        env["ADVISOR_BASE_MODEL"] = _absolute_if_local(settings.base_model)
    for name in sorted(settings.model_fields_set - _NOT_FOR_WORKERS):
        if getattr(settings, name) is not None:  # set empty: unset, as in this shell
            env.setdefault(f"ADVISOR_{name.upper()}", _env_value(getattr(settings, name)))
    return env


def _task_time_limit(env: dict[str, str]) -> int:
    return int(env.get("ADVISOR_TASK_TIME_LIMIT", DEFAULT_TASK_TIME_LIMIT))


def _absolute_if_local(model: str) -> str:
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _env_value(value: object) -> str:
    if isinstance(value, Path):
        return str(value.expanduser().resolve())
    if isinstance(value, list):
        # JSON, which every list setting reads: a `:` or `,` join would break on IPv6 hosts.
        return json.dumps([_env_value(item) for item in value])
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_job(
    variant: str, index: int, program: str, env: dict[str, str], log_dir: Path, process_type: str
) -> None:
    if not is_valid_variant_name(variant):
        raise ConfigError(f"Invalid variant name {variant!r}: lowercase letters, digits, _ or -")
    if index < 1:
        raise ConfigError(f"Worker index must be at least 1, got {index}")
    if not Path(program).is_absolute():
        # launchd's PATH is /usr/bin:/bin:/usr/sbin:/sbin: a bare name would not be found.
        raise ConfigError(f"Program {program!r} must be an absolute path (pass --program)")
    if not log_dir.is_absolute():
        raise ConfigError(f"Log directory {str(log_dir)!r} must be an absolute path")
    missing = [key for key in REQUIRED_ENV if not env.get(key)]
    if missing:
        raise ConfigError(f"Worker environment lacks {missing}; a launchd job inherits none")
    if process_type not in PROCESS_TYPES:
        raise ConfigError(f"ProcessType {process_type!r}; known: {list(PROCESS_TYPES)}")


def default_program() -> str:
    """The `advisor-worker` beside this interpreter (the venv's bin, not resolved past it)."""
    beside = Path(sys.executable).parent / PROGRAM_NAME
    if beside.exists():
        return str(beside.absolute())
    raise ConfigError(f"No {PROGRAM_NAME} beside {sys.executable}; pass --program PATH")


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, help="the one variant these workers serve")
    parser.add_argument("--count", type=_count, default=1, help="worker processes on this host")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where plists are written")
    parser.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR)
    parser.add_argument("--program", help="absolute path of advisor-worker (default: this venv's)")
    parser.add_argument("--process-type", choices=PROCESS_TYPES, default=DEFAULT_PROCESS_TYPE)
    parser.add_argument("--label-prefix", default=LABEL_PREFIX)


def launchd_main(args: argparse.Namespace) -> int:
    """Write the plists, then print the launchctl commands that start, restart or stop them."""
    from jobs.variants import load_registry_for

    settings = get_settings()
    # An unknown variant fails here, once, rather than in a launchd restart loop.
    load_registry_for(settings).get(args.variant)
    out: Path = args.out.expanduser().absolute()
    log_dir: Path = args.log_dir.expanduser().absolute()
    env = worker_env(settings)
    files = plists(
        args.variant, args.count, program=args.program or default_program(),
        env=env, log_dir=log_dir, label_prefix=args.label_prefix,
        process_type=args.process_type, working_dir=Path.cwd(),
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    new: list[Path] = []
    changed: list[Path] = []
    for name, data in files.items():
        path = out / name
        if path.exists() and path.read_bytes() == data:
            continue
        (changed if path.exists() else new).append(path)
        _write_private(path, data)
    surplus = _surplus(out, args.label_prefix, args.variant, args.count)

    print(f"{len(files)} worker plist(s) for variant {args.variant} in {out}: "
          f"{len(new)} new, {len(changed)} changed, {len(files) - len(new) - len(changed)} "
          f"unchanged; logs in {log_dir}")  # fmt: skip
    batch = settings.worker_batch
    print(
        f"{args.count} process(es) x ADVISOR_WORKER_BATCH={batch} = {args.count * batch} "
        f"analyses at once, {args.count} cop{'y' if args.count == 1 else 'ies'} of the model"
    )
    if args.count > 1:
        print("note: on one Mac, one process with a larger ADVISOR_WORKER_BATCH serves more "
              "per GB than several processes (each holds its own weights); see README, "
              "Worker throughput", file=sys.stderr)  # fmt: skip
    print(f"broker {mask_url(settings.resolved_broker_url)}, "
          f"database {mask_url(settings.resolved_database_url)}")  # fmt: skip
    if settings.is_embedded:
        print("note: the broker is the embedded default; only workers on this machine see it",
              file=sys.stderr)  # fmt: skip
    domain = "gui/$(id -u)"
    if new:
        print("Start the new workers:")
        for path in new:
            print(f"  launchctl bootstrap {domain} {path}")
    if changed:
        print("Restart the changed workers (bootout is a warm shutdown: the analysis finishes):")
        for path in changed:
            print(f"  launchctl bootout {domain}/{path.stem}")
            print(f"  launchctl bootstrap {domain} {path}")
    if surplus:
        grace = exit_timeout_for(_task_time_limit(env))
        print(f"Stop the surplus workers (warm shutdown, up to {grace} s each):")
        for path in surplus:
            print(f"  launchctl bootout {domain}/{path.stem} && rm {path}")
    print(f"Inspect one: launchctl print {domain}/{label_for(args.variant, 1, args.label_prefix)}")
    return 0


def _write_private(path: Path, data: bytes) -> None:
    # 0600: the plist holds the database and broker URLs, passwords included.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _surplus(out: Path, label_prefix: str, variant: str, count: int) -> list[Path]:
    pattern = re.compile(re.escape(f"{label_prefix}.worker.{variant}.") + r"(\d+)\.plist")
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := pattern.fullmatch(p.name))]
    return [path for index, path in sorted(found) if index > count]
