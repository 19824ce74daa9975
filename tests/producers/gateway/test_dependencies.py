"""The gateway with its dependencies: a Redis broker end to end, and each one down (503)."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import httpx

from jobs.contracts import Status
from jobs.incidents import CLIENT_TEXT, IncidentKind
from jobs.settings import Settings
from producers.gateway.schemas import UNSENT
from store import migrate
from store.db import engine_for
from store.models import Job
from store.repository import Repository
from tests.conftest import free_port
from tests.producers.gateway.conftest import ThreadGateway, jpeg, settings_of, stack_env
from tests.support import running_workers

IMAGE = base64.b64encode(jpeg(5)).decode()


def local_settings(tmp_path: Path, **values: object) -> Settings:
    database = values.pop("database_url", f"sqlite:///{tmp_path / 'advisor.db'}")
    assert isinstance(database, str)
    if database.startswith("sqlite"):
        migrate.upgrade(database)
    return Settings(
        data_dir=tmp_path / "data", database_url=database, registry=None,
        image_roots=[tmp_path], **values,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_job_travels_through_redis_to_a_worker_and_back(
    tmp_path: Path, redis_url: str, tiny_checkpoint: tuple[Path, Path]
) -> None:
    database = f"sqlite:///{tmp_path / 'advisor.db'}"
    migrate.upgrade(database)
    env = stack_env(tmp_path, tiny_checkpoint[0], database, redis_url)
    (tmp_path / "images").mkdir()
    (tmp_path / "base-only.json").write_text('{"variants": {}}')
    settings = settings_of(env, registry=tmp_path / "base-only.json")
    env.values["ADVISOR_REGISTRY"] = str(settings.registry)
    with (
        running_workers(env, ["base"], tmp_path),
        ThreadGateway(settings) as gateway,
        httpx.Client(base_url=gateway.url, timeout=150) as client,
    ):
        done = client.post(
            "/analyze", params={"wait": 120}, json={"image_base64": IMAGE, "advisor": "ansel"}
        )
        health = client.get("/health").json()
    assert done.status_code == 200, done.text
    assert done.json()["status"] == Status.SUCCEEDED
    assert health["status"] == "ok" and health["broker"]["detail"] == "redis"
    # One live worker of the default batch: 4 slots; in use as of its last beat (0 or the job).
    [queue] = health["queues"]
    assert queue.pop("slots_in_use") in (0, 1)
    assert queue == {"queue": "advisor.base", "variant": "base", "live_workers": 1, "depth": 0,
                     "slots": 4}  # fmt: skip


def test_an_unreachable_broker_is_503_and_the_job_waits_in_the_database(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    with ThreadGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=60) as c:
        submitted = c.post("/analyze", json={"image_base64": IMAGE, "advisor": "ansel"})
        health = c.get("/health")
        metrics = c.get("/metrics")
        public = c.get(f"/jobs/{submitted.json()['job_id']}").json()
    assert submitted.status_code == 503, submitted.text
    assert public["publish_error"] == UNSENT and public["published"] is False
    body = submitted.json()
    assert body["error"] == "broker_unavailable" and "sent automatically" in body["message"]
    assert "127.0.0.1" not in submitted.text and "redis" not in body["message"]
    assert submitted.headers["retry-after"] == "5"
    job = stored_job(settings, body["job_id"])
    assert (job.status, job.published_at) == (Status.QUEUED, None)
    assert job.publish_error and "unreachable" in job.publish_error
    assert health.status_code == 503
    assert health.json()["status"] == "down"
    assert health.json()["database"]["ok"] is True
    assert health.json()["broker"] == {"ok": False, "detail": "unreachable"}
    # The database still answers, so metrics do too, without the broker's queue depths.
    assert metrics.status_code == 200
    assert "advisor_jobs{" in metrics.text and "advisor_queue_depth{" not in metrics.text


def stored_job(settings: Settings, job_id: str) -> Job:
    return Repository(engine_for(settings.resolved_database_url)).get(job_id)


def test_an_unreachable_database_is_503(tmp_path: Path) -> None:
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/advisor"
    settings = local_settings(tmp_path, database_url=dead)
    with ThreadGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=60) as c:
        job = c.get(f"/jobs/{uuid.uuid4()}")
        submitted = c.post("/analyze", json={"image_base64": IMAGE, "advisor": "ansel"})
        health = c.get("/health")
    for response in (job, submitted):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "database_unavailable"
        # The driver's text (host, port, "connection refused") stays in the log, under the
        # reference the client reads.
        body = response.json()
        fixed = CLIENT_TEXT[IncidentKind.DATABASE]
        assert body["message"] == f"{fixed} (reference {body['reference']})"
        assert "127.0.0.1" not in response.text and "Connection refused" not in response.text
    assert health.status_code == 503
    assert health.json()["database"] == {"ok": False, "detail": "unreachable"}
    assert health.json()["broker"]["ok"] is True
    assert "127.0.0.1" not in health.text


def test_rollout_endpoints_answer_503_until_a_token_is_set(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    assert settings.gateway_token is None
    with ThreadGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=60) as c:
        shown = c.get("/rollouts", headers={"Authorization": "Bearer anything"})
        rollback = c.post("/rollouts/ansel/rollback", json={"reason": "x"})
    for response in (shown, rollback):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "rollouts_disabled"
        assert "ADVISOR_GATEWAY_TOKEN" in response.json()["message"]
        assert "retry-after" not in response.headers
