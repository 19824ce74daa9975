"""Feedback on critiques through the client, the CLI and HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from jobs.contracts import Assignment, ErrorKind
from jobs.errors import FeedbackRefused, InvalidFeedback, JobNotFound
from producers import cli
from producers.client import Client
from producers.commands import feedback as feedback_command
from producers.feedback import FeedbackStore
from producers.gateway import api, create_app
from producers.gateway.auth import intake_caller
from producers.services import Services
from store.db import engine_for
from tests.producers.conftest import make_settings
from tests.producers.crafted_jobs import Crafter


@pytest.fixture
def jobs(migrated_url: str) -> dict[str, str]:
    """One job in each state feedback cares about."""
    crafter = Crafter(engine_for(migrated_url))
    done, failed, running, queued = crafter.queue(4)
    crafter.succeed(done)
    crafter.fail(failed, ErrorKind.INVALID_OUTPUT)
    crafter.start(running)
    [shadow] = crafter.queue(1, variant="fine_tuned", assignment=Assignment.SHADOW)
    crafter.succeed(shadow)
    return {"done": done, "failed": failed, "running": running, "queued": queued,
            "shadow": shadow}  # fmt: skip


@pytest.fixture
def services(migrated_url: str, tmp_path: Path, registry_file: Path) -> Services:
    return Services(make_settings(tmp_path, migrated_url, registry_file))


@pytest.fixture
def client(services: Services) -> Client:
    return Client(services=services)


def test_feedback_is_stored_and_a_repeat_from_the_same_source_replaces_it(
    services: Services, client: Client, jobs: dict[str, str]
) -> None:
    first = client.feedback(jobs["done"], rating=2, helpful=False, comment="too vague")
    assert (first.rating, first.helpful, first.replaced, first.source) == (2, False, False, "app")
    again = client.feedback(jobs["done"], rating=5, helpful=True)
    assert (again.rating, again.helpful, again.comment, again.replaced) == (5, True, None, True)
    assert again.created_at == first.created_at and again.updated_at >= first.updated_at
    other = client.feedback(jobs["done"], rating=3, source="support-desk")
    assert not other.replaced
    rows = FeedbackStore(services.engine).for_job(jobs["done"])
    assert [(r.source, r.rating, r.simulated) for r in rows] == [
        ("app", 5, False), ("support-desk", 3, False)
    ]  # fmt: skip


def test_bad_values_unknown_unfinished_failed_and_shadow_jobs_are_refused(
    services: Services, client: Client, jobs: dict[str, str]
) -> None:
    for rating in (0, 6, True, 4.5):
        with pytest.raises(InvalidFeedback, match="rating"):
            client.feedback(jobs["done"], rating=rating)  # type: ignore[arg-type]
    with pytest.raises(InvalidFeedback, match="2001 characters"):
        client.feedback(jobs["done"], rating=3, comment="x" * 2001)
    with pytest.raises(JobNotFound):
        client.feedback("no-such-job", rating=3)
    for state, words in (
        ("queued", "is queued"),
        ("running", "is running"),
        ("failed", r"failed \(invalid_output\)"),
        ("shadow", "shadow run"),
    ):
        with pytest.raises(FeedbackRefused, match=words):
            client.feedback(jobs[state], rating=3)  # fmt: skip
    assert FeedbackStore(services.engine).for_job(jobs["done"]) == []


def test_the_cli_records_feedback_and_says_when_it_replaced_some(
    services: Services,
    client: Client,
    jobs: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(feedback_command, "client", lambda: Client(services.settings))
    assert cli.main(["feedback", jobs["done"], "--rating", "4", "--helpful"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"Feedback on {jobs['done']} from app: rating 4, helpful"
    )
    argv = ["feedback", jobs["done"], "--rating", "1", "--not-helpful", "--comment", "wrong"]
    assert cli.main([*argv, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["rating"], shown["helpful"], shown["replaced"]) == (1, False, True)
    assert cli.main(["feedback", jobs["running"], "--rating", "3"]) == 1
    assert "is running" in capsys.readouterr().err
    assert cli.main(["feedback", jobs["done"], "--rating", "9"]) == 2
    assert "invalid choice: 9" in capsys.readouterr().err


def test_the_http_api_answers_201_then_200_and_clear_4xx(
    services: Services, client: Client, jobs: dict[str, str]
) -> None:
    with TestClient(create_app(services.settings, registry=services.registry)) as http:
        created = http.post(f"/jobs/{jobs['done']}/feedback", json={"rating": 4, "helpful": True})
        assert created.status_code == 201, created.text
        assert created.json()["replaced"] is False and created.json()["source"] == "app"
        replaced = http.post(f"/jobs/{jobs['done']}/feedback",
                             json={"rating": 2, "comment": "missed the horizon"})  # fmt: skip
        assert replaced.status_code == 200 and replaced.json()["replaced"] is True
        cases = {
            "no-such-job": ({"rating": 3}, 404, "job_not_found"),
            jobs["queued"]: ({"rating": 3}, 409, "feedback_refused"),
            jobs["failed"]: ({"rating": 3}, 409, "feedback_refused"),
            jobs["shadow"]: ({"rating": 3}, 409, "feedback_refused"),
        }
        for bad in (
            {"rating": 0},
            {"rating": "4"},
            {"rating": 3, "comment": "x" * 2001},
            {"rating": 3, "helpful": "yes"},
            {"rating": 3, "extra": 1},
            {},
        ):
            cases[jobs["done"] + "#" + json.dumps(bad)] = (bad, 422, "validation_error")
        for target, (body, status, code) in cases.items():
            answer = http.post(f"/jobs/{target.split('#')[0]}/feedback", json=body)
            assert (answer.status_code, answer.json()["error"]) == (status, code), answer.text
    stored = FeedbackStore(services.engine).for_job(jobs["done"])
    assert [(f.rating, f.comment) for f in stored] == [(2, "missed the horizon")]


def test_feedback_and_cancel_are_protected_exactly_like_analyze() -> None:
    routes = {
        (r.path, m): r for r in api.router.routes if isinstance(r, APIRoute) for m in r.methods
    }

    def dependencies(route: APIRoute) -> set[object]:
        found, todo = set(), list(route.dependant.dependencies)
        while todo:
            dep = todo.pop()
            found.add(dep.call)
            todo.extend(dep.dependencies)
        return found

    analyze = dependencies(routes[("/analyze", "POST")])
    feedback = dependencies(routes[("/jobs/{job_id}/feedback", "POST")])
    cancel = dependencies(routes[("/jobs/{job_id}", "DELETE")])
    assert analyze == feedback == cancel and intake_caller in analyze
