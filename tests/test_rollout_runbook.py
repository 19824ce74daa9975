"""The rollout runbook (docs/rollout.md): steps in order, commands the real CLIs accept."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

from advisor_worker.devtools import launchd
from tests.deploy_support import (
    RUNBOOK,
    SCRIPTS,
    ParseResult,
    assert_parses,
    parse_with_entry_point,
    runbook_steps,
)


def _weights(command: tuple[str, ...]) -> dict[str, float]:
    return {k: float(v) for k, _, v in (a.partition("=") for a in command[4:] if "=" in a)}


def test_runbook_moves_ansel_through_the_stages_in_order() -> None:
    steps = runbook_steps()
    names = [s.name for s in steps if s.kind == "step"]
    assert len(names) == len(set(names)), "step names are unique"
    sets = [
        (i, c)
        for i, s in enumerate(steps)
        for c in s.commands
        if c[:3] == ("advisor", "rollout", "set")
    ]
    shares = [_weights(c).get("fine_tuned", 0.0) for _, c in sets[:4]]
    assert shares == [0.1, 0.25, 0.5, 1.0]
    previous = -1
    for index, command in sets[:4]:
        assert "--reason" in command
        assert abs(sum(_weights(command).values()) - 1.0) < 1e-9
        between = steps[previous + 1 : index]
        assert any(("advisor", "capacity") in s.commands for s in between), "capacity first"
        after = [c for s in steps[index : index + 2] for c in s.commands]
        assert ("advisor", "guard", "--once") in after, "guard after every stage"
        assert any(c[:2] == ("advisor", "report") for c in after), "report after every stage"
        previous = index
    rollback = [c for s in steps for c in s.commands if c[:3] == ("advisor", "rollout", "rollback")]
    assert rollback and all("--drain" in c and "--reason" in c for c in rollback)


def test_runbook_starts_workers_before_routing_and_stops_them_after() -> None:
    live: dict[str, int] = {"base": 1}
    for step in runbook_steps():
        if step.kind == "workers":
            variant, count = step.target
            before = live.get(variant, 0)
            if count > 0:
                assert (
                    "advisor-worker",
                    "launchd",
                    "--variant",
                    variant,
                    "--count",
                    str(count),
                ) in step.commands
            for i in range(before + 1, count + 1):
                plist = f"~/Library/LaunchAgents/{launchd.label_for(variant, i)}.plist"
                assert ("launchctl", "bootstrap", "gui/$(id", "-u)", plist) in step.commands
            for i in range(count + 1, before + 1):
                label = launchd.label_for(variant, i)
                assert ("launchctl", "bootout", "gui/$(id", f"-u)/{label}") in step.commands
                assert ("rm", f"~/Library/LaunchAgents/{label}.plist") in step.commands
            live[variant] = count
        for command in step.commands:
            if command[:3] == ("advisor", "rollout", "set"):
                for variant, weight in _weights(command).items():
                    assert weight == 0 or live.get(variant, 0) > 0, (
                        f"{variant} gets traffic with no worker"
                    )


def test_runbook_step_commands_need_no_shell() -> None:
    for step in runbook_steps():
        allowed = {"advisor", "advisor-worker"} | (
            {"launchctl", "rm"} if step.kind == "workers" else set()
        )
        for command in step.commands:
            assert command[0] in allowed, f"{step.name}: unexpected program {command[0]!r}"
            if step.kind == "step":
                assert not any(re.search(r"[$|;&<>`]", arg) for arg in command), (
                    f"{step.name}: {command}"
                )


def _runbook_commands() -> list[tuple[str, tuple[str, ...]]]:
    return [(s.name, c) for s in runbook_steps() for c in s.commands if c[0] in SCRIPTS]


@functools.cache
def _runbook_parses(program: str) -> dict[tuple[str, ...], ParseResult]:
    """One interpreter per program for all of the runbook's commands."""
    commands = sorted({c for _, c in _runbook_commands() if c[0] == program})
    results = parse_with_entry_point(program, [list(c[1:]) for c in commands])
    return dict(zip(commands, results, strict=True))


@pytest.mark.parametrize(
    ("step", "command"),
    [pytest.param(n, c, id=f"{n}:{' '.join(c[:3])}") for n, c in _runbook_commands()],
)
def test_each_runbook_command_is_accepted_by_the_real_entry_point(
    step: str, command: tuple[str, ...]
) -> None:
    program, *args = command
    assert_parses(program, args, _runbook_parses(program)[command])


def test_runbook_registry_gives_each_adapter_version_its_own_variant(tmp_path: Path) -> None:
    from jobs.variants import load_registry

    blocks = re.findall(r"^```json\n(.*?)^```", RUNBOOK.read_text(), re.MULTILINE | re.DOTALL)
    data = json.loads(blocks[0])
    dirs = [entry["adapter"] for entry in data["variants"].values()]
    assert len(dirs) == len(set(dirs)) == 2, "one directory per version, never shared"
    for directory in dirs:
        (tmp_path / directory).mkdir()
    (tmp_path / "registry.json").write_text(blocks[0])
    registry = load_registry(tmp_path / "registry.json", "base-model")
    assert {"base", "fine_tuned", "fine_tuned_v2"} == registry.names
    assert all(v.serves("ansel") for v in registry.variants.values())
