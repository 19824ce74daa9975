"""The `advisor` command: exit codes, one-line reasons, JSON output, never a traceback."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from jobs.contracts import BASE_VARIANT, FINE_TUNED_VARIANT
from store.db import engine_for
from store.lifecycle import Outcome, StartOutcome
from store.repository import Repository
from tests.conftest import free_port
from tests.producers.conftest import FINE_TUNED_ADVISOR, make_settings, photo, settings_env
from tests.support import run_command


class Advisor:
    """Runs `python -m producers.cli` against one test's database and broker."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        out = run_command("producers.cli", list(args), self.env)
        assert "Traceback" not in out.stderr, out.stderr
        assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
        return out


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The reason line; log and progress lines around it are allowed."""
    lines = [line for line in out.stderr.splitlines() if line.startswith("advisor")]
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.fixture
def fresh_advisor(tmp_path: Path, sqlite_url: str, registry_file: Path, redis_url: str) -> Advisor:
    """Against a database no migration has touched yet."""
    settings = make_settings(tmp_path, sqlite_url, registry_file, redis_url)
    return Advisor(settings_env(settings))


@pytest.fixture
def advisor(tmp_path: Path, sqlite_db: str, registry_file: Path, redis_url: str) -> Advisor:
    settings = make_settings(tmp_path, sqlite_db, registry_file, redis_url)
    return Advisor(settings_env(settings))


@pytest.fixture
def photo_file(tmp_path: Path) -> Path:
    path = tmp_path / "outside-the-roots.png"
    path.write_bytes(photo(1))
    return path


def test_a_new_database_is_reported_with_the_command_that_fixes_it(
    fresh_advisor: Advisor, photo_file: Path
) -> None:
    args = ["submit", str(photo_file), "--advisor", FINE_TUNED_ADVISOR]
    assert "advisor db upgrade" in one_error_line(fresh_advisor(*args, code=1))
    fresh_advisor("db", "upgrade")
    fresh_advisor(*args)


def test_an_unreachable_database_is_named_as_such_not_as_a_missing_schema(
    tmp_path: Path, registry_file: Path, redis_url: str
) -> None:
    dead = f"postgresql+psycopg://advisor:hunter2@127.0.0.1:{free_port()}/advisor"
    advisor = Advisor(settings_env(make_settings(tmp_path, dead, registry_file, redis_url)))
    line = one_error_line(advisor("status", "some-job", code=1))
    assert line.startswith("advisor: database unreachable") and "ADVISOR_DATABASE_URL" in line
    assert "db upgrade" not in line and "hunter2" not in line


def test_submit_prints_the_job_and_an_idempotent_resubmit_prints_the_same_one(
    advisor: Advisor, photo_file: Path
) -> None:
    args = ["submit", str(photo_file), "--advisor", FINE_TUNED_ADVISOR, "--json"]
    first = json.loads(advisor(*args, "--idempotency-key", "k1").stdout)
    again = json.loads(advisor(*args, "--idempotency-key", "k1").stdout)
    assert again["id"] == first["id"]
    assert (first["status"], first["variant"], first["assignment"]) == ("queued", "base", "split")
    assert first["image_ref"].startswith("sha256:")  # outside the roots: sent inline
    assert first["published_at"] is not None
    shown = json.loads(advisor("status", first["id"], "--json").stdout)
    assert shown["id"] == first["id"]
    # The short id lists print works wherever a job id does.
    assert json.loads(advisor("status", first["id"][:8], "--json").stdout)["id"] == first["id"]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["submit", "PHOTO", "--advisor", "nobody"], 1, "Unknown advisor 'nobody'"),
        (["submit", "PHOTO"], 2, "required: --advisor"),
        (["submit", "/no/such.png", "--advisor", "ansel"], 1, "not found"),
        (["submit", "PHOTO", "--advisor", "ansel", "--variant", "nope"], 1, "Unknown variant"),
        (["status", "no-such-job"], 1, "No job 'no-such-job'"),
        (["rollout", "set", "ansel", "base=x", "--reason", "r"], 1, "expected VARIANT=NUMBER"),
        (["rollout", "set", "ansel", "other=1", "--reason", "r"], 1, "Unknown variant(s)"),
        (["rollout", "set", "ansel", "base=1"], 2, "required: --reason"),
        (["rollout", "rollback", "nobody", "--reason", "r"], 1, "Unknown advisor"),
        (["frobnicate"], 2, "invalid choice"),
        (["report", "--advisor", "adams"], 1, "Unknown advisor 'adams'"),
    ],
)
def test_bad_input_exits_non_zero_with_a_one_line_reason(
    advisor: Advisor, photo_file: Path, args: list[str], code: int, says: str
) -> None:
    args = [str(photo_file) if a == "PHOTO" else a for a in args]
    assert says in one_error_line(advisor(*args, code=code))


def test_an_error_under_json_is_json_on_stdout_as_well_as_one_line_on_stderr(
    advisor: Advisor,
) -> None:
    out = advisor("status", "no-such-job", "--json", code=1)
    assert "No job 'no-such-job'" in one_error_line(out)
    error = json.loads(out.stdout)
    assert error == {"error": "job_not_found", "message": "No job 'no-such-job'", "exit_code": 1}


def test_wait_times_out_with_exit_code_three_and_the_status(
    advisor: Advisor, photo_file: Path
) -> None:
    job = json.loads(advisor("submit", str(photo_file), "--advisor", "okeefe", "--json").stdout)
    out = advisor("wait", job["id"], "--timeout", "0.3", code=3)
    assert "still queued" in one_error_line(out)
    assert f"{job['id'][:8]} queued" in out.stderr  # the progress line


def test_rollout_set_show_and_rollback_round_trip(advisor: Advisor) -> None:
    advisor("rollout", "set", "ansel", "base=0.9", "fine_tuned=0.1", "--reason", "canary")
    advisor("rollout", "rollback", "ansel", "--drain", "--reason", "regression")
    data = json.loads(advisor("rollout", "show", "--json").stdout)
    shown = {r["advisor"]: r for r in data["advisors"]}
    assert data["registry"]["chosen_by"] == "ADVISOR_REGISTRY"
    assert data["registry"]["path"] == advisor.env["ADVISOR_REGISTRY"]
    ansel = shown[FINE_TUNED_ADVISOR]
    assert (ansel["version"], ansel["reason"]) == (2, "regression")
    assert ansel["weights"] == {BASE_VARIANT: 1.0, FINE_TUNED_VARIANT: 0.0}
    assert "@" in ansel["updated_by"]
    assert shown["weston"]["variants"] == [BASE_VARIANT]


def test_rollout_writes_with_a_stale_expected_version_are_refused_in_one_line(
    advisor: Advisor,
) -> None:
    advisor("rollout", "set", "ansel", "base=0.9", "fine_tuned=0.1", "--reason", "canary",
            "--expected-version", "0")  # fmt: skip
    stale = advisor("rollout", "set", "ansel", "base=0.5", "fine_tuned=0.5", "--reason", "wide",
                    "--expected-version", "0", code=1)  # fmt: skip
    assert "are at version 1, not 0" in one_error_line(stale)
    back = advisor("rollout", "rollback", "ansel", "--reason", "r", "--expected-version", "7",
                   code=1)  # fmt: skip
    assert "are at version 1, not 7" in one_error_line(back)
    advisor("rollout", "rollback", "ansel", "--reason", "regression", "--expected-version", "1")
    [ansel] = [r for r in json.loads(advisor("rollout", "show", "--json").stdout)["advisors"]
               if r["advisor"] == FINE_TUNED_ADVISOR]  # fmt: skip
    assert (ansel["version"], ansel["reason"]) == (2, "regression")


def test_wait_draws_the_rows_progress_and_prints_the_finished_job(
    advisor: Advisor, photo_file: Path, sqlite_db: str
) -> None:
    job = json.loads(advisor("submit", str(photo_file), "--advisor", "okeefe", "--json").stdout)
    repo = Repository(engine_for(sqlite_db))
    with subprocess.Popen(
        [sys.executable, "-m", "producers.cli", "wait", job["id"], "--json", "--timeout", "30"],
        env=advisor.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stderr is not None
        # Off a terminal the bar writes one line per status change: read them as they come.
        assert f"{job['id'][:8]} queued" in proc.stderr.readline()
        assert repo.start(job["id"], "w1", lease_seconds=60, max_attempts=3) is StartOutcome.STARTED
        repo.record_progress(job["id"], "w1", 42, lease_seconds=60)
        assert "running" in proc.stderr.readline()
        repo.succeed(job["id"], "w1", Outcome({"overall_score": 6.5}, "{}", 3, 50, 900, "1"))
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    finished = json.loads(stdout)
    assert (finished["status"], finished["llm_outputs"]) == ("succeeded", {"overall_score": 6.5})
    assert "succeeded" in stderr


def test_a_dead_broker_keeps_the_job_and_republish_says_why_it_cannot_send(
    tmp_path: Path, sqlite_db: str, registry_file: Path, photo_file: Path
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    advisor = Advisor(settings_env(make_settings(tmp_path, sqlite_db, registry_file, dead)))
    out = advisor("submit", str(photo_file), "--advisor", "okeefe")
    assert "queued but not published" in out.stderr and "advisor republish" in out.stderr
    assert "unreachable" in one_error_line(advisor("republish", code=1))
    job_id = out.stdout.split()[0]
    assert json.loads(advisor("status", job_id, "--json").stdout)["status"] == "queued"


def test_cancel_then_the_sweep_sends_the_completion_task_and_deliveries_shows_it(
    advisor: Advisor, photo_file: Path, redis_url: str
) -> None:
    job = json.loads(advisor("submit", str(photo_file), "--advisor", "okeefe", "--json",
                             "--notify", "app.critique_done",
                             "--notify-queue", "advisor.notify.app.results").stdout)  # fmt: skip
    assert f"{job['id']} cancelled" in advisor("cancel", job["id"]).stdout
    assert "already cancelled" in one_error_line(advisor("cancel", job["id"], code=1))
    swept = json.loads(advisor("sweep", "--json").stdout)
    assert len(swept["deliveries"]["delivered"]) == 1
    [shown] = json.loads(advisor("deliveries", job["id"], "--json").stdout)
    assert (shown["kind"], shown["target"], shown["state"]) == (
        "task", "app.critique_done@advisor.notify.app.results", "delivered",
    )  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    try:
        [raw] = client.lrange("advisor.notify.app.results", 0, -1)
    finally:
        client.close()
    message = json.loads(raw)
    assert message["headers"]["task"] == "app.critique_done"
    assert message["headers"]["id"] == shown["id"]  # receivers dedupe on the task id
    [outcome], _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert (outcome["job_id"], outcome["status"]) == (job["id"], "cancelled")
    assert "Resending 0 undelivered" in advisor("deliveries", "retry").stdout


def test_keys_are_created_once_listed_without_the_key_and_revoked(advisor: Advisor) -> None:
    created = advisor("keys", "create", "photo-app", "--max-in-flight", "3")
    key = created.stdout.strip()
    assert key.startswith("adv_") and "shown only now" in created.stderr
    advisor("keys", "create", "grafana", "--read-only")
    listed = json.loads(advisor("keys", "list", "--json").stdout)
    assert [(k["name"], k["scope"], k["max_in_flight"]) for k in listed] == [
        ("photo-app", "intake", 3), ("grafana", "read", None)
    ]  # fmt: skip
    assert key not in advisor("keys", "list").stdout
    assert "refuse it within 2s" in advisor("keys", "revoke", "photo-app").stdout
    assert json.loads(advisor("keys", "list", "--json").stdout)[0]["revoked_at"]
    assert "exists already" in one_error_line(advisor("keys", "create", "photo-app", code=1))
    assert "No key named" in one_error_line(advisor("keys", "revoke", "nobody", code=1))
    assert "at least 1" in advisor("keys", "create", "x", "--rate-per-minute", "0", code=2).stderr


def test_prune_reports_what_it_deleted(advisor: Advisor) -> None:
    out = json.loads(advisor("prune", "--older-than", "1", "--jobs", "--json").stdout)
    assert out == {"older_than_days": 1.0, "images": 0, "image_bytes": 0, "jobs": 0}
    assert "job rows kept, older than 30 days" in advisor("prune").stdout
    advisor("prune", "--older-than", "0", code=2)
