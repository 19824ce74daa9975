"""Flower, started as docs/deploy.md says, sees both variants' workers, their queues and tasks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs.contracts import ANALYZE_TASK, queue_for, shadow_queue_for
from producers import Client, SubmitItem
from store.db import engine_for
from store.repository import Repository
from tests.advisor_worker.test_worker_e2e import photo, settings_of, setup_env
from tests.conftest import free_port
from tests.support import Env, eventually, running_workers, wait_until_final

USER, PASSWORD = "ops", "flower-test-secret"
WORKERS = "/api/workers?refresh=1"  # the workers, each asked afresh
# The command docker-compose.yml and docs/deploy.md give; credentials come from the environment.
FLOWER = [sys.executable, "-m", "celery", "--app=advisor_worker.flower_app", "flower"]


@contextmanager
def running_flower(env: Env, log_dir: Path) -> Iterator[str]:
    port = free_port()
    log = log_dir / "flower.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [*FLOWER, "--address=127.0.0.1", f"--port={port}"],
            env=env.full(FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD}"),
            cwd=log_dir,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"flower exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        return httpx.get(f"{url}/healthcheck", timeout=2).status_code == 200

    try:
        eventually("flower to answer", healthy, 60, poll=0.3, errors=(httpx.TransportError,),
                   context=lambda: log.read_text()[-3000:])  # fmt: skip
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def api(url: str, path: str) -> Any:
    response = httpx.get(f"{url}{path}", auth=(USER, PASSWORD), timeout=30)
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return response.json()


def body_of(url: str, path: str) -> Callable[[], str]:
    """A wait's failure context: the body `path` answers now."""
    return lambda: json.dumps(api(url, path))[:2000]


@pytest.fixture
def env(tmp_path: Path, tiny_model_dir: Path, redis_url: str) -> Env:
    return setup_env(tmp_path, tiny_model_dir, f"sqlite:///{tmp_path / 'advisor.db'}", redis_url)


def test_flower_shows_both_variants_workers_their_queues_and_the_analyze_tasks(
    env: Env, tmp_path: Path
) -> None:
    settings = settings_of(env)
    repo = Repository(engine_for(settings.resolved_database_url))
    host = socket.gethostname()
    with (
        running_flower(env, tmp_path) as url,
        running_workers(env, ["base", "fine_tuned"], tmp_path) as workers,
    ):
        names = {f"{w.variant}-{w.proc.pid}@{host}": w.variant for w in workers}
        with Client(settings) as client:
            handles = client.submit_many(
                [SubmitItem(photo(i), "ansel", variant=v) for i, v in enumerate(names.values())]
            )
        variant_of = {h.id: v for h, v in zip(handles, names.values(), strict=True)}
        wait_until_final(repo, list(variant_of), timeout=120)

        # Task events: the producer's task-sent, then the worker's received/started/succeeded.
        def ours(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
            return {j: t for t in body.values() for j in variant_of if j in (t["kwargs"] or "")}

        def finished() -> dict[str, dict[str, Any]] | None:
            tasks = ours(api(url, "/api/tasks"))
            states = [t["state"] for t in tasks.values()]
            return tasks if len(states) == len(variant_of) and set(states) == {"SUCCESS"} else None

        def listing() -> dict[str, Any] | None:
            body = api(url, WORKERS)
            return body if set(names) <= set(body) else None

        tasks = eventually("every analyze task to succeed", finished, 60, poll=0.5,
                           context=body_of(url, "/api/tasks"))  # fmt: skip
        # The workers answer Flower's inspect broadcast once they are idle.
        listed = eventually("both workers to be listed", listing, 60, poll=0.5,
                            context=body_of(url, WORKERS))  # fmt: skip
        lengths = api(url, "/api/queues/length")

    for name, variant in names.items():
        queues = sorted(q["name"] for q in listed[name]["active_queues"])
        # Its own queue, and its shadow queue (served only when its own queue is empty).
        assert queues == [queue_for(variant), shadow_queue_for(variant)], (name, queues)
        assert ANALYZE_TASK in listed[name]["registered"]
    for job_id, task in tasks.items():
        variant = variant_of[job_id]
        assert task["name"] == ANALYZE_TASK
        assert names[task["worker"]] == variant
        assert task["routing_key"] == queue_for(variant)
    depths = {q["name"]: q["messages"] for q in lengths["active_queues"]}
    assert depths == {
        queue: 0 for v in ("base", "fine_tuned") for queue in (queue_for(v), shadow_queue_for(v))
    }


def test_flower_refuses_requests_without_the_right_basic_auth(env: Env, tmp_path: Path) -> None:
    with running_flower(env, tmp_path) as url:
        anonymous = httpx.get(f"{url}/api/workers", timeout=10)
        wrong = httpx.get(f"{url}/api/workers", auth=(USER, "guess"), timeout=10)
        page = httpx.get(f"{url}/tasks", timeout=10)
        allowed = httpx.get(f"{url}/api/workers", auth=(USER, PASSWORD), timeout=10)
    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert page.status_code == 401
    assert allowed.status_code == 200


def test_flower_shows_a_batching_workers_four_analyses_running_at_once(
    env: Env, tmp_path: Path
) -> None:
    # Long outputs, so the four rows are seen started together before any finishes.
    env.values.update({"ADVISOR_WORKER_BATCH": "4", "ADVISOR_TEXT_LIMIT": "160",
                       "ADVISOR_MAX_OUTPUT_TOKENS": "2400"})  # fmt: skip
    settings = settings_of(env)
    repo = Repository(engine_for(settings.resolved_database_url))
    with running_flower(env, tmp_path) as url, running_workers(env, ["base"], tmp_path) as [w]:
        with Client(settings) as client:
            ids = [h.id for h in client.submit_many(
                [SubmitItem(photo(i), "ansel", variant="base") for i in range(4)]
            )]  # fmt: skip

        def started(body: dict[str, Any]) -> list[dict[str, Any]]:
            return [t for t in body.values() if any(j in (t["kwargs"] or "") for j in ids)
                    and t["state"] == "STARTED"]  # fmt: skip

        def all_started() -> list[dict[str, Any]] | None:
            tasks = started(api(url, "/api/tasks"))
            return tasks if len(tasks) == 4 else None

        running = eventually("four analyses started at once", all_started, 90, poll=0.5,
                             context=body_of(url, "/api/tasks"))  # fmt: skip
        wait_until_final(repo, ids, timeout=180)
    assert {t["worker"] for t in running} == {f"base-{w.proc.pid}@{socket.gethostname()}"}
