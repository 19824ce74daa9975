"""`advisor` starts light: only the given command's module loads, and no heavy library."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from producers import cli

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
