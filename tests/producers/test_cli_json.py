"""`--json` on every command prints JSON, errors included; unknown advisors and variants are
refused by every command that takes them. The table must name every command the parser has."""

from __future__ import annotations

import argparse
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.settings import get_settings
from producers import cli
from tests.conftest import free_port
from tests.producers.conftest import make_settings, photo, settings_env

NO_JOB = str(uuid.uuid4())
BAD = "--no-such-option"
# Per command (as the parser names it): a usage error, and where the command takes one, an
# unknown advisor, an unknown variant and an unknown job, each with the error code expected.
TABLE: dict[str, dict[str, tuple[list[str], str]]] = {
    "db upgrade": {"usage": (["db", "upgrade", BAD], "usage_error")},
    "submit": {
        "usage": (["submit", "--advisor", "ansel"], "usage_error"),
        "advisor": (["submit", "PHOTO", "--advisor", "adams"], "unknown_advisor"),
        "variant": (
            ["submit", "PHOTO", "--advisor", "ansel", "--variant", "xl"],
            "unknown_variant",
        ),  # fmt: skip
    },
    "status": {"usage": (["status"], "usage_error"), "job": (["status", NO_JOB], "job_not_found")},
    "wait": {"usage": (["wait", BAD], "usage_error"), "job": (["wait", NO_JOB], "job_not_found")},
    "cancel": {"usage": (["cancel"], "usage_error"), "job": (["cancel", NO_JOB], "job_not_found")},
    "republish": {"usage": (["republish", "x"], "usage_error")},
    "deliveries": {
        "usage": (["deliveries", "a", "b"], "usage_error"),
        "job": (["deliveries", NO_JOB], "job_not_found"),
    },
    "feedback": {
        "usage": (["feedback", NO_JOB], "usage_error"),
        "job": (["feedback", NO_JOB, "--rating", "4"], "job_not_found"),
    },
    "rollout show": {"usage": (["rollout", "show", "ansel"], "usage_error")},
    "rollout set": {
        "usage": (["rollout", "set", "ansel", "base=1"], "usage_error"),
        "advisor": (["rollout", "set", "adams", "base=1", "--reason", "r"], "unknown_advisor"),
        "variant": (["rollout", "set", "ansel", "xl=1", "--reason", "r"], "invalid_weights"),
    },
    "rollout rollback": {
        "usage": (["rollout", "rollback"], "usage_error"),
        "advisor": (["rollout", "rollback", "adams", "--reason", "r"], "unknown_advisor"),
    },
    "rollout plan": {
        "usage": (["rollout", "plan"], "usage_error"),
        "advisor": (["rollout", "plan", "show", "adams"], "unknown_advisor"),
        "variant": (
            ["rollout", "plan", "ansel", "xl", "--steps", "5,100", "--reason", "r"],
            "invalid_plan",
        ),  # fmt: skip
    },
    "demo": {"usage": (["demo", "--jobs", "x"], "usage_error")},
    "report": {
        "usage": (["report", "--days", "x"], "usage_error"),
        "advisor": (["report", "--advisor", "adams"], "unknown_advisor"),
    },
    "guard": {"usage": (["guard", BAD], "usage_error")},
    "guard replay": {
        "usage": (["guard", "replay"], "usage_error"),
        "advisor": (["guard", "replay", "--advisor", "adams"], "unknown_advisor"),
    },
    "capacity": {
        "usage": (["capacity", "--next-step", "2"], "usage_error"),
        "bench": (["capacity", "--bench", "/nonexistent/bench.json"], "invalid_bench_file"),
    },
    "sweep": {"usage": (["sweep", "--limit", "x"], "usage_error")},
    "metrics serve": {"usage": (["metrics", "serve", "--port", "x"], "usage_error")},
    "keys create": {"usage": (["keys", "create"], "usage_error")},
    "keys list": {"usage": (["keys", "list", "x"], "usage_error")},
    "keys revoke": {
        "usage": (["keys", "revoke"], "usage_error"),
        "unknown": (["keys", "revoke", "nobody"], "key_problem"),
    },
    "prune": {"usage": (["prune", "--older-than", "x"], "usage_error")},
    "config": {"usage": (["config"], "usage_error")},
}
CASES = [(name, case, argv, code) for name, cases in TABLE.items()
         for case, (argv, code) in cases.items()]  # fmt: skip


def leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[str]:
    """Every command the parser runs: a leaf, or a group that also runs on its own."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs or (prefix and not subs[0].required):
        yield prefix
    for name, child in subs[0].choices.items() if subs else ():
        yield from leaf_commands(child, f"{prefix} {name}".strip())


def test_the_table_names_every_command_and_each_has_a_usage_case() -> None:
    assert sorted(leaf_commands(cli.build_parser([], full=True))) == sorted(TABLE)
    assert all("usage" in cases for cases in TABLE.values())


@pytest.fixture
def env(
    tmp_path: Path, sqlite_db: str, registry_file: Path, redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:  # fmt: skip
    settings = make_settings(tmp_path, sqlite_db, registry_file, redis_url)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    picture = tmp_path / "photo.png"
    picture.write_bytes(photo(1))
    yield picture
    get_settings.cache_clear()


@pytest.mark.parametrize(("name", "case", "argv", "code"), CASES,
                         ids=[f"{n}-{c}" for n, c, _a, _k in CASES])  # fmt: skip
def test_every_command_under_json_answers_its_errors_as_json(
    env: Path, capsys: pytest.CaptureFixture[str], name: str, case: str, argv: list[str],
    code: str,
) -> None:  # fmt: skip
    args = [str(env) if word == "PHOTO" else word for word in argv]
    status = cli.main([*args, "--json"])
    out, err = capsys.readouterr()
    assert status == (2 if case == "usage" else 1), (out, err)
    error = json.loads(out)
    assert error["error"] == code, error
    assert error["exit_code"] == status and error["message"] in err
    if case in ("advisor", "variant"):
        # The refusal names the known ones: the way out.
        assert "known" in error["message"], error


def test_a_bug_logs_its_traceback_at_error_under_the_reference_the_json_gives(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    from producers.commands import jobs

    bug = AttributeError("'NoneType' object has no attribute 'pid'")

    def broken(_args: argparse.Namespace) -> int:
        raise bug

    monkeypatch.setattr(jobs, "cmd_status", broken)  # a fault injected into one command
    with caplog.at_level(logging.ERROR):
        status = cli.main(["status", NO_JOB, "--json"])
    out, err = capsys.readouterr()
    assert status == 1
    error = json.loads(out)
    reference = error["reference"]
    # The client reads the fixed text and the reference; the operator's log has the rest.
    assert error["message"] == f"Internal error (reference {reference})", error
    assert "NoneType" not in out
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert reference in logged.getMessage() and logged.exc_info is not None
    assert logged.exc_info[1] is bug
    assert reference in err.strip().splitlines()[-1]


@pytest.mark.parametrize("argv", [["status", NO_JOB], ["report"], ["rollout", "show"],
                                  ["guard", "replay", "--advisor", "ansel"], ["keys", "list"],
                                  ["deliveries", NO_JOB], ["feedback", NO_JOB, "--rating", "3"],
                                  ["prune"]])  # fmt: skip
def test_a_command_under_json_on_an_unreachable_database_answers_json(
    tmp_path: Path, registry_file: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], argv: list[str],
) -> None:  # fmt: skip
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/advisor"
    for name, value in settings_env(make_settings(tmp_path, dead, registry_file)).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        status = cli.main([*argv, "--json"])
    finally:
        get_settings.cache_clear()
    out, _err = capsys.readouterr()
    assert status == 1
    error = json.loads(out)
    assert error["reference"] and "ADVISOR_DATABASE_URL" in error["message"], error


@pytest.mark.parametrize("argv", [["db", "upgrade"], ["republish"], ["keys", "create", "app"],
                                  ["keys", "revoke", "app"], ["keys", "list"]])  # fmt: skip
def test_commands_that_change_things_answer_json_too(
    env: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    if argv[:2] == ["keys", "revoke"]:
        assert cli.main(["keys", "create", "app"]) == 0
        capsys.readouterr()
    assert cli.main([*argv, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer or answer == [], answer
    if argv[:2] == ["keys", "create"]:
        assert answer["name"] == "app" and answer["key"].startswith(answer["prefix"])
