"""`advisor rollout plan`: create, show, pause, resume, abort; a manual set pauses the plan."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.producers.test_cli import Advisor, advisor, one_error_line

__all__ = ["advisor"]  # the fixture, imported for the tests below


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["ansel", "nope", "--steps", "5,100", "--reason", "r"], "Unknown candidate 'nope'"),
        (["nobody", "fine_tuned", "--steps", "5,100", "--reason", "r"], "Unknown advisor"),
        (["ansel", "fine_tuned", "--steps", "50,25", "--reason", "r"], "Steps must increase"),
        (["ansel", "fine_tuned", "--steps", "5,150", "--reason", "r"], "in (0, 100]"),
        (["ansel", "fine_tuned", "--reason", "r"], "needs --steps and --reason"),
        (["show", "ansel"], "ansel has no rollout plan"),
        (["pause", "ansel"], "no active or paused rollout plan"),
    ],
)
def test_bad_plans_exit_non_zero_with_a_one_line_reason(
    advisor: Advisor, args: list[str], says: str
) -> None:
    assert says in one_error_line(advisor("rollout", "plan", *args, code=1))


def test_a_plan_is_created_shown_paused_resumed_and_aborted(advisor: Advisor) -> None:
    out = advisor("rollout", "plan", "ansel", "fine_tuned", "--steps", "5,25,50,100",
                  "--min-jobs", "10", "--min-minutes", "5", "--reason", "canary")  # fmt: skip
    assert "ansel/fine_tuned plan #1 active: [5%] -> 25% -> 50% -> 100%" in out.stdout
    assert "workers needed: base=1, fine_tuned=1" in out.stdout
    second = advisor("rollout", "plan", "ansel", "fine_tuned", "--steps", "5,100", "--reason",
                     "again", code=1)  # fmt: skip
    assert "already has an open rollout plan" in one_error_line(second)

    shown = json.loads(advisor("rollout", "plan", "show", "ansel", "--json").stdout)
    assert (shown["status"], shown["percent"], shown["min_jobs"]) == ("active", 5.0, 10)
    weights = json.loads(advisor("rollout", "show", "--json").stdout)["advisors"]
    [ansel] = [w for w in weights if w["advisor"] == "ansel"]
    assert ansel["weights"] == {"base": 0.95, "fine_tuned": 0.05}

    paused = json.loads(advisor("rollout", "plan", "pause", "ansel", "--json").stdout)
    assert paused["status"] == "paused"
    resumed = json.loads(advisor("rollout", "plan", "resume", "ansel", "--json").stdout)
    assert resumed["status"] == "active" and resumed["weights_version"] > shown["weights_version"]
    refused = advisor("rollout", "plan", "abort", "ansel", code=1)
    assert "needs --reason" in one_error_line(refused)
    aborted = advisor("rollout", "plan", "abort", "ansel", "--reason", "not now", "--json")
    assert json.loads(aborted.stdout)["status"] == "aborted"
    weights = json.loads(advisor("rollout", "show", "--json").stdout)["advisors"]
    [ansel] = [w for w in weights if w["advisor"] == "ansel"]
    assert ansel["weights"] == {"base": 1.0, "fine_tuned": 0.0}


def test_a_manual_set_pauses_the_plan_and_says_so(advisor: Advisor) -> None:
    advisor("rollout", "plan", "ansel", "fine_tuned", "--steps", "5,50", "--reason", "canary")
    out = advisor("rollout", "set", "ansel", "base=0.7", "fine_tuned=0.3", "--reason", "by hand")
    assert "Paused the rollout plan of ansel at 5%" in out.stdout
    shown = advisor("rollout", "plan", "show", "ansel").stdout
    assert "paused: weights set by" in shown and "(by hand)" in shown
    back = advisor("rollout", "rollback", "ansel", "--reason", "bad")
    assert "ended" not in back.stdout  # a paused plan stays paused until resumed or aborted


def test_the_guard_command_steps_plans_and_prints_where_each_stands(advisor: Advisor) -> None:
    advisor("rollout", "plan", "ansel", "fine_tuned", "--steps", "5,50", "--reason", "canary")
    out = advisor("guard", "--once").stdout
    assert "plan ansel/fine_tuned active: holding at 5%: 0 of 30 finished fine_tuned jobs" in out
    shown = json.loads(advisor("rollout", "plan", "show", "ansel", "--json").stdout)
    assert shown["details"]["last_check"]["candidate_jobs"] == 0


def test_the_plan_hook_runs_before_the_command_exits(advisor: Advisor, tmp_path: Path) -> None:
    out = tmp_path / "hook.json"
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import json, os\n"
        f"json.dump({{k: v for k, v in os.environ.items() if k.startswith('ADVISOR_PLAN_')}}, "
        f"open({str(out)!r}, 'w'))\n"
    )
    with_hook = Advisor({**advisor.env, "ADVISOR_PLAN_HOOK": f"{sys.executable} {hook}"})
    with_hook("rollout", "plan", "ansel", "fine_tuned", "--steps", "10,100", "--reason", "r")
    env = json.loads(out.read_text())
    assert (env["ADVISOR_PLAN_STEP"], env["ADVISOR_PLAN_STATUS"]) == ("10", "active")
    assert set(json.loads(env["ADVISOR_PLAN_WORKERS"])) == {"base", "fine_tuned"}
