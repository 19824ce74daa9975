"""Cancelling on a real worker: a queued job never starts, a running one stops within a second."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from jobs.contracts import Status
from producers import Client
from store.db import engine_for
from store.repository import Repository
from tests.advisor_worker.test_worker_e2e import photo, settings_of, setup_env
from tests.producers.gateway.conftest import ThreadGateway
from tests.support import Env, eventually, running_workers, wait_generating, wait_until_final


@pytest.fixture(params=["embedded", "redis"])
def env(request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path) -> Env:
    if request.param == "redis":
        broker = request.getfixturevalue("redis_url")
    else:
        broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    env = setup_env(tmp_path, tiny_model_dir, f"sqlite:///{tmp_path / 'advisor.db'}", broker)
    # Long outputs (~1000 tokens, seconds each) so a cancel lands mid-generation. The embedded
    # run is a batch of one (B=1), Redis a batch of four (B=4).
    env.values.update(ADVISOR_TEXT_LIMIT="160", ADVISOR_MAX_OUTPUT_TOKENS="1800",
                      ADVISOR_WORKER_BATCH="1" if request.param == "embedded" else "4")  # fmt: skip
    return env


def test_queued_and_running_jobs_cancel_and_a_finished_one_answers_409(
    env: Env, tmp_path: Path
) -> None:
    settings = settings_of(env)
    repo = Repository(engine_for(settings.resolved_database_url))
    broker = settings.resolved_broker_url.split(":", 1)[0]
    with (
        Client(settings) as client,
        ThreadGateway(settings) as gateway,
        httpx.Client(base_url=gateway.url, timeout=30) as http,
    ):
        early = client.submit(photo(1), "ansel", variant="base")
        answer = http.delete(f"/jobs/{early.id}")
        assert (answer.status_code, answer.json()["status"]) == (200, "cancelled")
        with running_workers(env, ["base"], tmp_path) as [worker]:
            ids = [client.submit(photo(10 + i), "ansel", variant="base").id for i in range(3)]
            victim = wait_generating(repo, ids, 60, poll=0.02)
            started = time.perf_counter()
            answer = http.delete(f"/jobs/{victim.id}")
            assert answer.status_code == 202, answer.text
            eventually(
                "the running job to stop",
                lambda: repo.get(victim.id).status != Status.RUNNING,
                60,
                poll=0.01,
            )
            latency = time.perf_counter() - started
            others = [i for i in ids if i != victim.id]
            wait_until_final(repo, others, timeout=150)
            late = http.delete(f"/jobs/{others[0]}")
            assert worker.proc.poll() is None
            log = worker.output()
    assert (late.status_code, late.json()["job_status"]) == (409, "succeeded")
    stopped = repo.get(victim.id)
    batch = env.values["ADVISOR_WORKER_BATCH"]
    print(f"cancel latency on a running job ({broker}, B={batch}): "
          f"{latency * 1000:.0f} ms from DELETE to `cancelled`, after "
          f"{stopped.output_tokens} output tokens")  # fmt: skip
    assert stopped.status == Status.CANCELLED and stopped.error_kind is None
    assert stopped.error is not None and stopped.error.startswith("Cancelled while generating")
    assert stopped.raw_output and stopped.raw_output.startswith("{")
    assert stopped.output_tokens and stopped.output_tokens >= victim.progress
    assert stopped.llm_outputs is None
    assert all(repo.get(i).status == Status.SUCCEEDED for i in others)
    never = repo.get(early.id)
    assert (never.status, never.attempts, never.started_at) == (Status.CANCELLED, 0, None)
    assert f"advisor.analyze {victim.id} -> cancelled" in log
    assert f"Job {early.id} not started: finished" in log
