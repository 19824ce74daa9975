"""No client-visible text names a host, a URL, a password, SQL or a driver's message.

Real failures are forced (a PostgreSQL server that is not there, a database with no schema, a
notify broker that refuses, with passwords in both URLs) and every route's error answer, the
job a tenant reads and the command line's --json are searched for what they must not carry.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobs.incidents import CLIENT_TEXT, IncidentKind
from producers import Client, Services
from producers.gateway import create_app
from store import migrate
from tests.conftest import free_port
from tests.producers.conftest import make_settings, photo, registry_file, settings_env
from tests.support import run_command

__all__ = ["registry_file"]  # the fixture, imported for pytest

TOKEN = "client-text-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PASSWORD = "s3cret-pw-9"
# Bodies that pass validation, so each request reaches the database or the broker.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/analyze"): {"image_base64": "", "advisor": "ansel"},
    ("post", "/jobs/{job_id}/feedback"): {"rating": 4},
    ("put", "/rollouts/{advisor}"): {"weights": {"base": 1.0}, "reason": "r"},
    ("post", "/rollouts/{advisor}/rollback"): {"reason": "r"},
    ("post", "/rollouts/{advisor}/plan"): {
        "variant": "fine_tuned",
        "steps": [5, 100],
        "reason": "r",
    },  # fmt: skip
    ("post", "/rollouts/{advisor}/plan/pause"): {"reason": "r"},
    ("post", "/rollouts/{advisor}/plan/resume"): {"reason": "r"},
    ("post", "/rollouts/{advisor}/plan/abort"): {"reason": "r"},
}


def b64_photo() -> str:
    return base64.b64encode(photo(3)).decode()


def leaks(text: str, *hosts: str) -> list[str]:
    """What `text` carries that a client may not read: the password, hosts, URLs, SQL, drivers."""
    found = [word for word in (PASSWORD, *hosts) if word in text]
    patterns = (
        r"\w+://", r"\bSELECT\b", r"\bFROM \w", r"\bINSERT INTO\b", r"\brelation\b",
        r"psycopg", r"sqlalchemy", r"Errno", r"onnection refused", r"Traceback",
    )  # fmt: skip
    return found + [p for p in patterns if re.search(p, text)]


def every_route(app: Any) -> list[tuple[str, str]]:
    spec = app.openapi()
    return [(method, path) for path, ops in spec["paths"].items() for method in ops]


def walk(client: TestClient, image: str) -> list[tuple[str, int, str]]:
    answers = []
    for method, path in every_route(client.app):
        url = path.format(job_id=uuid.uuid4(), advisor="ansel")
        body = dict(BODIES.get((method, path), {}))
        if "image_base64" in body:
            body["image_base64"] = image
        response = client.request(method.upper(), url, headers=AUTH, json=body or None)
        answers.append((f"{method.upper()} {path}", response.status_code, response.text))
    return answers


def gateway_on(tmp_path: Path, registry_file: Path, database: str, **extra: Any) -> TestClient:
    settings = make_settings(tmp_path, database, registry_file, gateway_token=TOKEN, **extra)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_every_route_on_an_unreachable_postgresql_answers_503_naming_no_host_or_password(
    tmp_path: Path, registry_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    dead = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{port}/advisor"
    with gateway_on(tmp_path, registry_file, dead) as client, caplog.at_level(logging.WARNING):
        answers = walk(client, b64_photo())
    assert len(answers) >= 15  # every operation of the API, not a sample
    for route, status, text in answers:
        assert status != 500, (route, text)
        assert not leaks(text, str(port), "127.0.0.1"), (route, text)
    outages = [json.loads(text) for _r, status, text in answers if status == 503]
    assert len(outages) >= 10
    for body in outages:
        if body.get("error") != "database_unavailable":  # /health answers its own shape
            continue
        # The fixed text and a reference; the log holds the driver's text under that reference.
        assert body["message"].startswith(CLIENT_TEXT[IncidentKind.DATABASE]), body
        assert any(body["reference"] in r.getMessage() and str(port) in r.getMessage()
                   for r in caplog.records)  # fmt: skip


def test_every_route_on_a_postgresql_database_without_schema_shows_no_sql(
    tmp_path: Path, registry_file: Path, postgres_url: str
) -> None:
    # A database with no tables: each query fails with the SQL and `relation ... does not exist`.
    with gateway_on(tmp_path, registry_file, postgres_url) as client:
        answers = walk(client, b64_photo())
    statuses = {status for _route, status, _text in answers}
    assert 503 in statuses
    for route, status, text in answers:
        assert status != 500, (route, text)
        assert not leaks(text, "127.0.0.1", "5432"), (route, text)


def test_a_refused_completion_task_shows_the_tenant_a_fixed_text_and_the_operator_the_reason(
    tmp_path: Path, registry_file: Path, postgres_url: str
) -> None:
    migrate.upgrade(postgres_url)
    port = free_port()
    notify = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    settings = make_settings(tmp_path, postgres_url, registry_file, gateway_token=TOKEN,
                             notify_broker_url=notify, delivery_max_attempts=1)  # fmt: skip
    with Services(settings) as services, Client(services=services) as client:
        handle = client.submit(photo(7), "ansel", notify="app.done",
                               notify_queue="advisor.notify.app")  # fmt: skip
        client.cancel(handle.id)  # a final job: its notice is due now
        done = services.courier.deliver_job(handle.id)
        [delivery] = client.deliveries_of(handle.id)
    assert done.undelivered == [delivery.id]
    # The operator's stored reason names the broker (password masked) and the cause.
    assert delivery.last_error and str(port) in delivery.last_error
    assert PASSWORD not in delivery.last_error
    with TestClient(create_app(settings), raise_server_exceptions=False) as gateway:
        shown = gateway.get(f"/jobs/{handle.id}", headers=AUTH)
        waited = gateway.get(f"/jobs/{handle.id}?wait=1", headers=AUTH)
    for response in (shown, waited):
        assert response.status_code == 200, response.text
        [notice] = response.json()["deliveries"]
        assert notice["last_error"].startswith(CLIENT_TEXT[IncidentKind.BROKER])
        assert all("detail" not in attempt for attempt in notice["log"])
        assert not leaks(response.text, str(port), "127.0.0.1"), response.text
    # The command line is the operator's: its JSON keeps the reason.
    shown_cli = run_command(
        "producers.cli", ["deliveries", handle.id, "--json"], settings_env(settings), timeout=120
    )
    [operator] = json.loads(shown_cli.stdout)
    assert str(port) in operator["last_error"] and "detail" in operator["log"][0]


COMMANDS_ON_THE_DATABASE = [["status", "0" * 8], ["report"], ["rollout", "show"],
                            ["deliveries", "0" * 8], ["capacity"], ["keys", "list"]]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS_ON_THE_DATABASE)
def test_a_command_under_json_on_an_unreachable_database_names_no_host_or_password(
    tmp_path: Path, registry_file: Path, command: list[str]
) -> None:
    port = free_port()
    dead = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{port}/advisor"
    settings = make_settings(tmp_path, dead, registry_file)
    out = run_command("producers.cli", [*command, "--json"], settings_env(settings), timeout=120)
    assert out.returncode == 1, out.stderr
    error = json.loads(out.stdout)
    assert error["message"].startswith(CLIENT_TEXT[IncidentKind.DATABASE]), error
    assert "ADVISOR_DATABASE_URL" in error["message"]  # the way out
    assert not leaks(out.stdout, str(port), "127.0.0.1"), out.stdout
    # The operator's stderr keeps the reason, under the same reference.
    assert error["reference"] in out.stderr and str(port) in out.stderr
