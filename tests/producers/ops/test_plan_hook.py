"""ADVISOR_PLAN_HOOK: a real command told the step and workers; failures logged, never blocking."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from producers.ops.plan_hook import PlanHook
from producers.plans import Plan, PlanStatus

NOW = datetime(2026, 12, 6, tzinfo=UTC)
PLAN = Plan(
    7, "ansel", "fine_tuned", (5.0, 25.0, 100.0), 1, PlanStatus.ACTIVE, 10, 5.0, 0.5, 3, 4, NOW,
    "at 25%", {}, NOW, "op", "canary", NOW,
)  # fmt: skip


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "hook.py"
    path.write_text(body)
    return f"{sys.executable} {path}"


def test_the_hook_gets_the_advisor_variant_step_and_workers_in_its_environment(
    tmp_path: Path,
) -> None:
    out = tmp_path / "env.json"
    body = (
        "import json, os, sys\n"
        f"json.dump({{k: v for k, v in os.environ.items() if k.startswith('ADVISOR_PLAN_')}}, "
        f"open({str(out)!r}, 'w'))\n"
    )
    PlanHook(script(tmp_path, body), timeout=30)(PLAN, {"base": 2, "fine_tuned": 1}).join(30)
    env = json.loads(out.read_text())
    assert env["ADVISOR_PLAN_ADVISOR"] == "ansel"
    assert (env["ADVISOR_PLAN_VARIANT"], env["ADVISOR_PLAN_STEP"]) == ("fine_tuned", "25")
    assert json.loads(env["ADVISOR_PLAN_WORKERS"]) == {"base": 2, "fine_tuned": 1}
    assert (env["ADVISOR_PLAN_WORKERS_BASE"], env["ADVISOR_PLAN_WORKERS_FINE_TUNED"]) == ("2", "1")


def test_a_failing_hook_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    body = "import sys\nprint('no scaler here', file=sys.stderr)\nsys.exit(3)\n"
    with caplog.at_level(logging.ERROR, logger="producers.ops.plan_hook"):
        PlanHook(script(tmp_path, body), timeout=30)(PLAN, {"base": 1}).join(30)
    assert "plan hook for ansel at 25%: exit 3: no scaler here" in caplog.text


def test_a_hanging_hook_never_blocks_the_caller_and_is_killed_at_its_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = "import time\ntime.sleep(60)\n"
    with caplog.at_level(logging.ERROR, logger="producers.ops.plan_hook"):
        started = time.monotonic()
        thread = PlanHook(script(tmp_path, body), timeout=1)(PLAN, {"base": 1})
        assert time.monotonic() - started < 0.5  # the guard goes on at once
        thread.join(30)
    assert not thread.is_alive()
    assert "no exit within 1s; killed" in caplog.text


def test_a_missing_hook_command_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="producers.ops.plan_hook"):
        PlanHook("/no/such/scaler --now", timeout=5)(PLAN, {"base": 1}).join(30)
    assert "could not run '/no/such/scaler'" in caplog.text
