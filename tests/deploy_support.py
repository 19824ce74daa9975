"""Deployment test support: real entry-point parsing, and the rollout runbook's steps."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = ROOT / "docs" / "rollout.md"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SCRIPTS: dict[str, str] = PROJECT["scripts"]

# ---- Work in progress elsewhere: clearly marked, and strict from the moment it lands. ----
# A subcommand that its CLI still rejects as an invalid choice is xfailed; once the CLI knows
# the name, every flag is checked. Delete the entry when its issue lands.
AWAITING_SUBCOMMANDS: dict[tuple[str, str], str] = {}


# Imports the console script's module, replaces argparse's parse_args so that it raises once
# parsing succeeded, and reports each argv's outcome. Sockets cannot bind: nothing serves.
_PARSE_DRIVER = r"""
import argparse, contextlib, importlib, io, json, socket, sys

class Parsed(BaseException):
    pass

_original = argparse.ArgumentParser.parse_args

def _parse_args(self, args=None, namespace=None):
    raise Parsed(_original(self, args, namespace))

def _no_bind(self, *args):
    raise OSError("parse check: the command tried to bind a socket before parsing")

argparse.ArgumentParser.parse_args = _parse_args
socket.socket.bind = _no_bind
name, target, argvs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
module, _, attr = target.partition(":")
main = getattr(importlib.import_module(module), attr)
results = []
for argv in argvs:
    sys.argv = [name, *argv]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main()
        results.append({"ok": False, "error": "returned without parsing its arguments"})
    except Parsed as parsed:
        args = json.loads(json.dumps(vars(parsed.args[0]), default=str))
        results.append({"ok": True, "args": args})
    except SystemExit as exc:
        results.append({"ok": False, "error": err.getvalue().strip() or f"exit {exc.code}"})
print(json.dumps(results))
"""


@dataclass(frozen=True)
class ParseResult:
    ok: bool
    args: dict[str, Any]
    error: str


def parse_with_entry_point(script: str, argvs: list[list[str]]) -> list[ParseResult]:
    """Run each argv through the console script's own parser (pyproject), stopping there."""
    if script not in SCRIPTS:
        pytest.fail(f"{script!r} is not a console script of this project: {sorted(SCRIPTS)}")
    proc = subprocess.run(
        [sys.executable, "-c", _PARSE_DRIVER, script, SCRIPTS[script], json.dumps(argvs)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")},
    )  # fmt: skip
    assert proc.returncode == 0, f"{script} ({SCRIPTS[script]}) failed to load:\n{proc.stderr}"
    return [
        ParseResult(r["ok"], r.get("args", {}), r.get("error", "")) for r in json.loads(proc.stdout)
    ]


def assert_parses(script: str, argv: list[str], result: ParseResult) -> None:
    if result.ok:
        return
    subcommand = argv[0] if argv else ""
    awaiting = AWAITING_SUBCOMMANDS.get((script, subcommand))
    if awaiting and f"invalid choice: '{subcommand}'" in result.error:
        pytest.xfail(f"`{script} {subcommand}` is not there yet, awaiting {awaiting}")
    pytest.fail(f"`{shlex.join([script, *argv])}` is rejected by its parser: {result.error}")


@dataclass(frozen=True)
class RunbookStep:
    """A marked ```bash block of docs/rollout.md: `# step: NAME` or `# workers: VARIANT=N`."""

    kind: str
    name: str
    commands: tuple[tuple[str, ...], ...]

    @property
    def target(self) -> tuple[str, int]:
        variant, _, count = self.name.partition("=")
        return variant, int(count)


def runbook_steps(path: Path = RUNBOOK) -> list[RunbookStep]:
    """The runbook's procedure in document order; the executing test reads it the same way."""
    steps = []
    for block in re.findall(r"^```bash\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL):
        lines = block.replace("\\\n", " ").splitlines()
        marker = re.fullmatch(r"# (step|workers): (\S+)", lines[0].strip())
        if marker is None:
            continue
        commands = tuple(
            tuple(shlex.split(line))
            for line in lines[1:]
            if line.strip() and not line.lstrip().startswith("#")
        )
        steps.append(RunbookStep(marker.group(1), marker.group(2), commands))
    return steps
