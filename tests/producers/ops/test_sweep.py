"""The recovery sweep: dead workers' jobs re-queued or given up, lost messages resent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from jobs.contracts import (
    MESSAGE_VERSION,
    SWEEP_TASK,
    Assignment,
    ErrorKind,
    Status,
    queue_for,
)
from producers import Client
from producers.commands.sweep import sweeper
from producers.ops.sweep import SweepReport, beat_schedule, register_sweep_task
from producers.services import Services
from store.lifecycle import StartOutcome
from store.submissions import NewJob
from tests.producers.conftest import (
    FINE_TUNED_ADVISOR,
    RedisServer,
    make_settings,
    photo,
    queued_requests,
    settings_env,
)
from tests.support import run_command


@pytest.fixture
def redis_url(own_redis: RedisServer) -> str:
    """A private server: no other process's worker can consume these queues."""
    return own_redis.url


@pytest.fixture
def services(
    tmp_path: Path, sqlite_db: str, registry_file: Path, redis_url: str
) -> Iterator[Services]:
    settings = make_settings(tmp_path, sqlite_db, registry_file, redis_url, max_attempts=2,
                             worker_live_window=1.0, heartbeat_interval=0.5)  # fmt: skip
    with Services(settings) as built:
        yield built


@pytest.fixture
def client(services: Services) -> Client:
    return Client(services=services)


def sweep(services: Services) -> SweepReport:
    return sweeper(services).sweep()


def submit(client: Client, count: int) -> list[str]:
    items = [{"image": photo(i), "advisor": FINE_TUNED_ADVISOR, "variant": "base"}
             for i in range(count)]  # fmt: skip
    return [handle.id for handle in client.submit_many(items)]


def drain(redis_url: str, variant: str) -> None:
    """The broker forgets the queue, as a restart without persistence does."""
    server = redis.Redis.from_url(redis_url)
    server.delete(queue_for(variant))
    server.close()


def test_an_expired_job_is_requeued_and_republished_while_a_leased_one_is_left_alone(
    services: Services, client: Client, redis_url: str
) -> None:
    dead, alive = submit(client, 2)
    drain(redis_url, "base")  # both messages were consumed by their workers
    repo = services.repository
    assert repo.start(dead, "w-dead", lease_seconds=0.01, max_attempts=2) is StartOutcome.STARTED
    assert repo.start(alive, "w-alive", lease_seconds=60, max_attempts=2) is StartOutcome.STARTED
    time.sleep(0.05)
    report = sweep(services)
    assert (report.requeued, report.poisoned) == ([dead], [])
    assert [r["job_id"] for r in queued_requests(redis_url, "base")] == [dead]
    requeued = repo.get(dead)
    assert (requeued.status, requeued.attempts) == (Status.QUEUED, 1)
    assert (requeued.published_at is not None, requeued.publish_attempts) == (True, 2)
    assert repo.get(alive).status == Status.RUNNING


def test_an_expired_job_that_used_all_its_attempts_is_given_up_as_poison(
    services: Services, client: Client, redis_url: str
) -> None:
    [job_id] = submit(client, 1)
    drain(redis_url, "base")
    repo = services.repository
    for attempt in (1, 2):
        outcome = repo.start(job_id, f"w{attempt}", lease_seconds=0.01, max_attempts=2)
        assert outcome is StartOutcome.STARTED
        time.sleep(0.05)
        report = sweep(services)
    assert (report.requeued, report.poisoned) == ([], [job_id])
    job = repo.get(job_id)
    assert (job.status, job.error_kind, job.attempts) == (Status.FAILED, ErrorKind.POISON, 2)
    assert job.error and "Gave up after 2 attempts" in job.error
    assert queued_requests(redis_url, "base") == [
        {"version": MESSAGE_VERSION, "job_id": job_id, "variant": "base"}
    ]


def test_queued_jobs_are_resent_as_lost_only_once_their_queue_is_empty_and_they_are_stale(
    services: Services, client: Client, redis_url: str
) -> None:
    ids = submit(client, 2)
    assert sweep(services).resent == []  # fresh: still within the live window
    time.sleep(services.settings.worker_live_window + 0.1)
    assert sweep(services).resent == []  # stale, but their messages are still queued
    drain(redis_url, "base")
    report = sweep(services)
    assert sorted(report.resent) == sorted(ids)
    assert sorted(r["job_id"] for r in queued_requests(redis_url, "base")) == sorted(ids)
    assert sweep(services).resent == []  # just resent: fresh again


def test_advisor_sweep_prints_one_json_round_and_exits_zero(
    services: Services, client: Client, redis_url: str
) -> None:
    [job_id] = submit(client, 1)
    drain(redis_url, "base")
    services.repository.start(job_id, "w-gone", lease_seconds=0.01, max_attempts=2)
    time.sleep(0.05)
    out = run_command("producers.cli", ["sweep", "--json"], settings_env(services.settings))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["requeued"] == [job_id] and report["publish_error"] is None


def test_the_sweep_task_registers_under_its_name_and_is_scheduled_for_beat(
    services: Services, client: Client, redis_url: str
) -> None:
    app = Celery("ops")
    register_sweep_task(app, services.settings)
    assert app.tasks[SWEEP_TASK].name == SWEEP_TASK
    [job_id] = submit(client, 1)
    drain(redis_url, "base")
    services.repository.start(job_id, "w-gone", lease_seconds=0.01, max_attempts=2)
    time.sleep(0.05)
    assert app.tasks[SWEEP_TASK]()["requeued"] == [job_id]
    assert beat_schedule(30, queue="advisor.ops") == {
        "advisor-sweep": {"task": SWEEP_TASK, "schedule": 30,
                          "options": {"expires": 30, "queue": "advisor.ops"}},
    }  # fmt: skip


def test_a_job_started_before_its_publish_was_recorded_is_republished_without_the_grace(
    services: Services, client: Client, redis_url: str
) -> None:
    # A fast worker can start a job before the producer marks it published; the row then
    # shows no publish at all, like a row still mid-submit, which republish leaves alone.
    new = NewJob(FINE_TUNED_ADVISOR, "a" * 64, "sha256:" + "a" * 64, "s", "base",
                 Assignment.FORCED, 0)  # fmt: skip
    [(job, _)] = services.repository.create_jobs([new])
    services.repository.start(job.id, "w-gone", lease_seconds=0.01, max_attempts=2)
    time.sleep(0.05)
    report = sweep(services)
    assert (report.requeued, report.republished) == ([job.id], 1)
    assert [r["job_id"] for r in queued_requests(redis_url, "base")] == [job.id]
