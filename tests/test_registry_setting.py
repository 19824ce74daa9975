"""A configured registry that does not exist stops every process, in one line naming it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import Env, script

COMMANDS = {
    "advisor-worker run": ["advisor-worker", "run", "--variant", "fine_tuned"],
    "advisor-worker check": ["advisor-worker", "check", "--variant", "base"],
    "advisor submit": ["advisor", "submit", "PHOTO", "--advisor", "ansel"],
    "advisor rollout show": ["advisor", "rollout", "show"],
    "advisor-gateway": ["advisor-gateway", "--port", "1"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_missing_configured_registry_is_refused_in_one_line(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "adapters" / "registry.json"
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"never read")
    env = Env({"ADVISOR_DATA_DIR": str(tmp_path / "data"), "ADVISOR_REGISTRY": str(missing)})
    name, *args = COMMANDS[command]
    out = subprocess.run(
        [*script(name), *[str(photo) if a == "PHOTO" else a for a in args]],
        env=env.full(), cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert f"ADVISOR_REGISTRY={missing}: no such file" in line
    assert "unset ADVISOR_REGISTRY" in line
