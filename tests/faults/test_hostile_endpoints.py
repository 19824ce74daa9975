"""Hostile input to the newer endpoints on PostgreSQL and Redis: rollout plans over HTTP,
feedback, a job's deliveries, and `advisor guard replay` / `advisor deliveries`.

Each case is a 4xx (or a usage or not-found exit) with a message naming the problem, never a
500, and nothing is stored: no plan, no feedback, no weights change, no delivery reset.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from jobs.settings import Settings, get_settings
from producers import Client, Services, cli
from producers.gateway import create_app
from store import migrate
from store.models import Delivery, Feedback, Job, RolloutPlan
from tests.conftest import REDIS_HOST, REDIS_PORT, postgres_database
from tests.producers.conftest import make_settings, photo, settings_env
from tests.producers.crafted_jobs import Crafter

TOKEN = "hostile-endpoints-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
PLAN = {"variant": "fine_tuned", "steps": [5, 25, 50, 100], "reason": "canary"}
MAX_BODY = 64_000


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str  # {job} is the succeeded job's id
    body: bytes
    status: int
    says: str  # in the message


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def plan(**changes: Any) -> bytes:
    return js({**PLAN, **changes})


def raw(text: str) -> bytes:
    return text.encode()


PLAN_CASES = [
    Case("variant with NUL", "POST", "/rollouts/ansel/plan", plan(variant="fine\x00tuned"), 422,
         "variant"),
    Case("variant with ESC", "POST", "/rollouts/ansel/plan", plan(variant="fine\x1b[2J"), 422,
         "variant"),
    Case("variant unknown", "POST", "/rollouts/ansel/plan", plan(variant="xl"), 422, "xl"),
    Case("variant naming a broker key", "POST", "/rollouts/ansel/plan", plan(variant="unacked"),
         422, "unacked"),
    Case("variant 10k chars", "POST", "/rollouts/ansel/plan", plan(variant="v" * 10_000), 422,
         "variant"),
    Case("steps NaN", "POST", "/rollouts/ansel/plan",
         raw('{"variant":"fine_tuned","steps":[5,NaN,100],"reason":"r"}'), 422, "steps"),
    Case("steps Infinity", "POST", "/rollouts/ansel/plan",
         raw('{"variant":"fine_tuned","steps":[5,Infinity],"reason":"r"}'), 422, "steps"),
    Case("steps 1e308", "POST", "/rollouts/ansel/plan", plan(steps=[5, 1e308]), 422, "steps"),
    Case("steps 1e999 (inf)", "POST", "/rollouts/ansel/plan",
         raw('{"variant":"fine_tuned","steps":[5,1e999],"reason":"r"}'), 422, "steps"),
    Case("steps negative", "POST", "/rollouts/ansel/plan", plan(steps=[-5, 100]), 422, "steps"),
    Case("steps strings", "POST", "/rollouts/ansel/plan", plan(steps=["5", "x"]), 422, "steps"),
    Case("steps empty", "POST", "/rollouts/ansel/plan", plan(steps=[]), 422, "steps"),
    Case("steps 10k", "POST", "/rollouts/ansel/plan", plan(steps=list(range(1, 10_001))), 422,
         "steps"),
    Case("steps 51", "POST", "/rollouts/ansel/plan", plan(steps=[1 + i for i in range(51)]), 422,
         "steps"),
    Case("steps an object", "POST", "/rollouts/ansel/plan", plan(steps={"a": 1}), 422, "steps"),
    Case("min_jobs 2**70", "POST", "/rollouts/ansel/plan", plan(min_jobs=2**70), 422, "min_jobs"),
    Case("min_jobs 1e308", "POST", "/rollouts/ansel/plan", plan(min_jobs=1e308), 422,
         "min_jobs"),
    Case("min_jobs -1", "POST", "/rollouts/ansel/plan", plan(min_jobs=-1), 422, "min_jobs"),
    Case("min_minutes NaN", "POST", "/rollouts/ansel/plan",
         raw('{"variant":"fine_tuned","steps":[5,100],"reason":"r","min_minutes":NaN}'), 422,
         "min_minutes"),
    Case("min_minutes 1e308", "POST", "/rollouts/ansel/plan", plan(min_minutes=1e308), 422,
         "min_minutes"),
    Case("margin Infinity", "POST", "/rollouts/ansel/plan",
         raw('{"variant":"fine_tuned","steps":[5,100],"reason":"r","margin":Infinity}'), 422,
         "margin"),
    Case("margin -1", "POST", "/rollouts/ansel/plan", plan(margin=-1), 422, "margin"),
    Case("reason NUL", "POST", "/rollouts/ansel/plan", plan(reason="a\x00b"), 422, "reason"),
    Case("reason missing", "POST", "/rollouts/ansel/plan", js({"variant": "fine_tuned",
         "steps": [5]}), 422, "reason"),
    Case("actor C1", "POST", "/rollouts/ansel/plan", plan(actor="op\x9b"), 422, "actor"),
    Case("extra field", "POST", "/rollouts/ansel/plan", plan(weights={"base": 1}), 422,
         "weights"),
    Case("body an array", "POST", "/rollouts/ansel/plan", js([PLAN]), 422, "body"),
    Case("body not JSON", "POST", "/rollouts/ansel/plan", raw("{variant: fine_tuned"), 422,
         "JSON"),
    Case("body oversize", "POST", "/rollouts/ansel/plan", plan(reason="r" * (MAX_BODY + 1)),
         413, "limit"),
    Case("advisor unknown", "POST", "/rollouts/adams/plan", plan(), 422, "adams"),
    Case("advisor with NUL", "POST", "/rollouts/an%00sel/plan", plan(), 422, "advisor"),
    Case("advisor 300 chars", "POST", "/rollouts/" + "a" * 300 + "/plan", plan(), 422,
         "advisor"),
    Case("advisor unknown, show", "GET", "/rollouts/adams/plan", b"", 422, "adams"),
    Case("pause with no plan", "POST", "/rollouts/ansel/plan/pause", js({}), 404, "plan"),
    Case("abort without reason", "POST", "/rollouts/ansel/plan/abort", js({}), 422, "reason"),
    Case("abort reason NUL", "POST", "/rollouts/ansel/plan/abort", js({"reason": "\x00"}), 422,
         "reason"),
    Case("resume unknown advisor", "POST", "/rollouts/adams/plan/resume", js({}), 422, "adams"),
]  # fmt: skip
FEEDBACK = "/jobs/{job}/feedback"
FEEDBACK_CASES = [
    Case("rating NaN", "POST", FEEDBACK, raw('{"rating": NaN}'), 422, "rating"),
    Case("rating Infinity", "POST", FEEDBACK, raw('{"rating": Infinity}'), 422, "rating"),
    Case("rating 1e308", "POST", FEEDBACK, js({"rating": 1e308}), 422, "rating"),
    Case("rating 2**70", "POST", FEEDBACK, js({"rating": 2**70}), 422, "rating"),
    Case("rating 4.0", "POST", FEEDBACK, js({"rating": 4.0}), 422, "rating"),
    Case("rating a string", "POST", FEEDBACK, js({"rating": "4"}), 422, "rating"),
    Case("rating true", "POST", FEEDBACK, js({"rating": True}), 422, "rating"),
    Case("rating 0", "POST", FEEDBACK, js({"rating": 0}), 422, "rating"),
    Case("rating missing", "POST", FEEDBACK, js({"helpful": True}), 422, "rating"),
    Case("helpful a string", "POST", FEEDBACK, js({"rating": 4, "helpful": "yes"}), 422,
         "helpful"),
    Case("comment NUL", "POST", FEEDBACK, js({"rating": 4, "comment": "ok\x00"}), 422,
         "comment"),
    Case("comment ESC", "POST", FEEDBACK, js({"rating": 4, "comment": "\x1b[31m"}), 422,
         "comment"),
    Case("comment 2001 chars", "POST", FEEDBACK, js({"rating": 4, "comment": "x" * 2001}), 422,
         "comment"),
    Case("comment a list", "POST", FEEDBACK, js({"rating": 4, "comment": ["a"]}), 422,
         "comment"),
    Case("source empty", "POST", FEEDBACK, js({"rating": 4, "source": ""}), 422, "source"),
    Case("source blank", "POST", FEEDBACK, js({"rating": 4, "source": "   "}), 422, "source"),
    Case("source NUL", "POST", FEEDBACK, js({"rating": 4, "source": "app\x00"}), 422, "source"),
    Case("source 101 chars", "POST", FEEDBACK, js({"rating": 4, "source": "s" * 101}), 422,
         "source"),
    Case("extra field", "POST", FEEDBACK, js({"rating": 4, "simulated": True}), 422,
         "simulated"),
    Case("body oversize", "POST", FEEDBACK, js({"rating": 4, "comment": "x" * MAX_BODY}), 413,
         "limit"),
    Case("job unknown", "POST", "/jobs/00000000-0000-4000-8000-000000000000/feedback",
         js({"rating": 4}), 404, "job"),
    Case("job id with NUL", "POST", "/jobs/ab%00cd/feedback", js({"rating": 4}), 404, "job"),
    Case("job id a path", "POST", "/jobs/..%2F..%2Fetc/feedback", js({"rating": 4}), 404,
         "not found"),
    Case("job id 5000 chars", "POST", "/jobs/" + "a" * 5000 + "/feedback", js({"rating": 4}),
         404, "job"),
]  # fmt: skip
JOB_CASES = [
    Case("job unknown", "GET", "/jobs/00000000-0000-4000-8000-000000000000", b"", 404, "job"),
    Case("job id with NUL", "GET", "/jobs/ab%00cd", b"", 404, "job"),
    Case("wait NaN", "POST", "/analyze?wait=NaN", b"{}", 422, "wait"),
    Case("wait 1e308", "POST", "/analyze?wait=1e308", b"{}", 422, "wait"),
    Case("wait inf", "POST", "/analyze?wait=inf", b"{}", 422, "wait"),
    Case("wait -0.5", "POST", "/analyze?wait=-0.5", b"{}", 422, "wait"),
]  # fmt: skip


@dataclass
class Endpoints:
    """The module's gateway (in process) over its own PostgreSQL database and Redis index."""

    settings: Settings
    client: TestClient
    services: Services
    done: str  # a succeeded job with a failed webhook notice


@pytest.fixture(scope="module")
def databases(redis_db: int) -> Iterator[tuple[str, str]]:
    """A PostgreSQL database of this module's own and this test process's Redis index."""
    index = redis_db
    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=index).flushdb()
    with postgres_database("advisor_hostile") as postgres:
        yield postgres, f"redis://{REDIS_HOST}:{REDIS_PORT}/{index}"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, databases: tuple[str, str]
) -> Iterator[Endpoints]:
    tmp_path = tmp_path_factory.mktemp("hostile-endpoints")
    postgres, broker = databases
    registry = tmp_path / "adapters" / "registry.json"
    (tmp_path / "adapters" / "ft").mkdir(parents=True)
    registry.write_text(
        json.dumps({"variants": {"fine_tuned": {"adapter": "ft", "advisors": ["ansel"]}}})
    )
    migrate.upgrade(postgres)
    settings = make_settings(
        tmp_path, postgres, registry, broker, gateway_token=TOKEN, gateway_max_body_bytes=MAX_BODY,
        webhook_secret="s" * 32, webhook_allowed_hosts=["127.0.0.1"], delivery_max_attempts=1,
    )  # fmt: skip
    services = Services(settings)
    with Client(services=services) as client:
        handle = client.submit(photo(11), "ansel", callback_url="http://127.0.0.1:9/hook")
    Crafter(services.engine).succeed(handle.id)
    services.courier.deliver_job(handle.id)  # nobody listens on port 9: undelivered
    with TestClient(create_app(settings), raise_server_exceptions=False) as gateway:
        yield Endpoints(settings, gateway, services, handle.id)
    services.close()


def stored(stack: Endpoints) -> tuple[int, int, int, int, Any]:
    with stack.services.engine.connect() as conn:
        jobs = conn.scalar(select(func.count()).select_from(Job))
        plans = conn.scalar(select(func.count()).select_from(RolloutPlan))
        feedback = conn.scalar(select(func.count()).select_from(Feedback))
        attempts = conn.scalar(select(func.sum(Delivery.attempts)))
    version = stack.services.rollouts.get("ansel").version
    return jobs or 0, plans or 0, feedback or 0, attempts or 0, version


@pytest.mark.parametrize("case", PLAN_CASES + FEEDBACK_CASES + JOB_CASES, ids=lambda c: c.name)
def test_a_hostile_request_to_a_newer_endpoint_is_a_clear_4xx_and_stores_nothing(
    stack: Endpoints, case: Case
) -> None:
    before = stored(stack)
    response = stack.client.request(
        case.method, case.path.replace("{job}", stack.done), content=case.body or None,
        headers=AUTH,
    )  # fmt: skip
    assert response.status_code == case.status, response.text
    body = response.json()
    assert body["error"] and case.says.lower() in body["message"].lower(), body
    assert stored(stack) == before


def test_a_tenant_reads_the_failed_notice_without_the_socket_error(stack: Endpoints) -> None:
    shown = stack.client.get(f"/jobs/{stack.done}", headers=AUTH).json()
    [notice] = shown["deliveries"]
    assert notice["state"] == "undelivered" and notice["last_error"]
    assert "127.0.0.1" not in notice["last_error"] and "refused" not in notice["last_error"]
    assert all("detail" not in attempt for attempt in notice["log"])


@pytest.fixture
def operator(stack: Endpoints, monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoints]:
    for name, value in settings_env(stack.settings).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield stack
    get_settings.cache_clear()


COMMAND_CASES = [
    (["guard", "replay", "--advisor", "an\x00sel"], 1, "unknown_advisor"),
    (["guard", "replay", "--advisor", "ansel", "--every", "nan"], 2, "usage_error"),
    (["guard", "replay", "--advisor", "ansel", "--every", "inf"], 2, "usage_error"),
    (["guard", "replay", "--advisor", "ansel", "--every", "1e308"], 2, "usage_error"),
    (["guard", "replay", "--advisor", "ansel", "--every", "-5"], 2, "usage_error"),
    (["guard", "replay", "--advisor", "ansel", "--window-hours", "1e308"], 2, "usage_error"),
    (["guard", "replay", "--advisor", "ansel", "--from", "9999-99-99"], 2, "usage_error"),
    (["guard", "replay", "--advisor", "ansel", "--from", "2026-12-02", "--to", "2026-12-01"], 2,
     "usage_error"),
    (["guard", "replay", "--advisor", "ansel", "--from", "0001-01-01T00:00:00"], 2,
     "usage_error"),
    (["deliveries", "\x00"], 1, "job_not_found"),
    (["deliveries", "a" * 5000], 1, "job_not_found"),
    (["deliveries", "retry", "00000000-0000-4000-8000-000000000000"], 1, "job_not_found"),
    (["deliveries", "retry", "not-a-job\x1b"], 1, "job_not_found"),
    (["feedback", "{job}", "--rating", "4", "--comment", "a\x00b"], 1, "invalid_feedback"),
    (["feedback", "{job}", "--rating", "4", "--source", " "], 1, "invalid_feedback"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "code", "error"), COMMAND_CASES,
                         ids=[" ".join(a)[:60] for a, _c, _e in COMMAND_CASES])  # fmt: skip
def test_a_hostile_command_line_is_a_clear_refusal_that_stores_nothing(
    operator: Endpoints, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, error: str
) -> None:
    before = stored(operator)
    args = [word.replace("{job}", operator.done) for word in argv]
    assert cli.main([*args, "--json"]) == code
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert answer["error"] == error and answer["message"] in err, answer
    assert "Traceback" not in err and "internal error" not in err
    assert stored(operator) == before
