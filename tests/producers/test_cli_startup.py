"""`advisor` starts light: only the given command's module loads, and no heavy library."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from jobs.contracts import Assignment
from producers import cli
from store.db import engine_for
from store.repository import Repository
from store.submissions import NewJob
from tests.producers.conftest import make_settings, settings_env

HEAVY = ("scipy", "celery", "kombu", "sqlalchemy", "producers.ops.report", "producers.client")


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_loads_no_scipy_sqlalchemy_celery_or_report() -> None:
    loaded = _loaded_after("import producers.cli")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY}


def test_help_and_a_status_parse_load_no_scipy_or_celery() -> None:
    loaded = _loaded_after(
        "from producers import cli\n"
        "cli.build_parser(['--help'])\n"
        "cli.build_parser(['status', 'abc']).parse_args(['status', 'abc'])\n"
        "import producers.commands.jobs"
    )
    assert "producers.commands.jobs" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("scipy", "celery", "kombu")}
    assert "producers.ops.report" not in loaded and "producers.client" not in loaded


# What `advisor status` runs without: broker, photo intake, registry, router, migrations, HTTP.
STATUS_NEVER = (
    "scipy", "numpy", "PIL", "mlx", "celery", "kombu", "redis", "alembic", "httpx", "fastapi",
    "starlette", "photos", "notices", "jobs.broker", "jobs.variants", "producers.client",
    "producers.services", "producers.router", "producers.ops", "producers.gateway",
)  # fmt: skip


def test_a_status_run_to_its_answer_loads_no_broker_intake_registry_or_migrations(
    tmp_path: Path, sqlite_db: str, registry_file: Path
) -> None:
    new = NewJob("ansel", "a" * 64, "sha256:" + "a" * 64, "user-1", "base", Assignment.SPLIT, 1)
    [(job, _created)] = Repository(engine_for(sqlite_db)).create_jobs([new])
    probe = (
        "import json, sys\nfrom producers import cli\n"
        f"code = cli.main(['status', {job.id[:8]!r}])\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))"
    )
    env = settings_env(make_settings(tmp_path, sqlite_db, registry_file))
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith(f"{job.id} queued ansel -> base"), out.stdout + out.stderr
    answer = json.loads(lines[-1])
    assert answer["code"] == 0
    assert not [
        name for name in answer["modules"]
        if any(name == heavy or name.startswith(f"{heavy}.") for heavy in STATUS_NEVER)
    ]  # fmt: skip


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, str | None]]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    return [(name, helps.get(name)) for name in sub.choices]


def test_the_command_table_names_every_command_its_modules_register_in_order() -> None:
    table = [command for _module, commands in cli.COMMANDS for command in commands]
    assert _commands(cli.build_parser([], full=True)) == table
    assert _commands(cli.build_parser(["--help"])) == table


def test_an_unknown_command_is_one_usage_line_listing_the_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "producers.cli", "statuss", "x"], capture_output=True, text=True
    )
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert "invalid choice: 'statuss'" in line and "'status'" in line


def test_the_rollout_and_plan_commands_load_scipy_only_when_they_compute() -> None:
    # `advisor rollout show/set/plan` read and write rows; the statistics (and scipy, 0.6 s
    # of a 1.4 s command) load only in the functions that compute them.
    show = ["rollout", "plan", "show", "ansel"]
    loaded = _loaded_after(
        "from producers import cli\n"
        f"cli.build_parser({show!r}).parse_args({show!r})\n"
        "import producers.ops.plan_gate, producers.ops.verdicts, producers.ops.srm"
    )
    assert {"producers.commands.rollout", "producers.ops.verdicts"} <= loaded
    assert not {m for m in loaded if m.split(".")[0] == "scipy"}
