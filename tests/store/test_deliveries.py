"""The outbox rows: written with the job, due once it is final, claimed by one sender at a time."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from jobs.clock import utcnow
from jobs.contracts import DeliveryKind, DeliveryState, ErrorKind
from store.db import engine_for
from store.deliveries import MAX_BACKOFF_SECONDS, DeliveryStore, backoff_seconds
from store.repository import Repository
from store.submissions import NewDelivery
from tests.store.test_repository import new_job, outcome, start

NOTICES = (
    NewDelivery(DeliveryKind.TASK, "app.critique_done", "advisor.notify.app.results"),
    NewDelivery(DeliveryKind.WEBHOOK, "https://hooks.example.com/advisor"),
)


@pytest.fixture
def store(migrated_url: str) -> DeliveryStore:
    return DeliveryStore(engine_for(migrated_url))


@pytest.fixture
def repo(migrated_url: str) -> Repository:
    return Repository(engine_for(migrated_url))


def attempt(ok: bool) -> dict[str, object]:
    return {"at": utcnow().isoformat(), "by": "test", "ok": ok, "error": None if ok else "down"}


def test_notices_are_written_with_their_job_and_due_only_once_it_is_final(
    repo: Repository, store: DeliveryStore
) -> None:
    [(job, _)] = repo.create_jobs([new_job(deliveries=NOTICES)])
    [(plain, _)] = repo.create_jobs([new_job(subject="u2")])
    rows = store.of_job(job.id)
    assert [(d.kind, d.target, d.queue, d.state) for d in rows] == [
        ("task", "app.critique_done", "advisor.notify.app.results", "pending"),
        ("webhook", "https://hooks.example.com/advisor", None, "pending"),
    ]
    assert store.of_job(plain.id) == []
    assert store.claim_due(lease_seconds=30) == []
    start(repo, job.id)
    assert store.claim_due(lease_seconds=30) == []
    repo.succeed(job.id, "w1", outcome())
    claimed = store.claim_due(lease_seconds=30, job_id=job.id)
    assert sorted(d.kind for d, _ in claimed) == ["task", "webhook"]
    assert all(j.status == "succeeded" for _, j in claimed)
    # Held: neither the sweep nor a second worker call gets them now.
    assert store.claim_due(lease_seconds=30) == []


def test_a_failed_attempt_waits_its_backoff_then_gives_up_at_the_limit(
    repo: Repository, store: DeliveryStore
) -> None:
    [(job, _)] = repo.create_jobs([new_job(deliveries=NOTICES[1:])])
    repo.fail(job.id, ErrorKind.INTERNAL, "boom")
    [(delivery, _)] = store.claim_due(lease_seconds=30)
    assert store.record(delivery, attempt(False), delivered=False, give_up=False, retry_in=60)
    [row] = store.of_job(job.id)
    assert row.state == DeliveryState.PENDING and row.attempts == 1
    assert row.next_attempt_at is not None and row.next_attempt_at > utcnow() + timedelta(
        seconds=50
    )
    assert store.claim_due(lease_seconds=30) == []  # not before its retry time
    # A sender whose claim lapsed cannot record over a newer attempt.
    assert not store.record(delivery, attempt(True), delivered=True, give_up=False, retry_in=0)
    assert store.record(row, attempt(False), delivered=False, give_up=True, retry_in=0)
    [gone] = store.of_job(job.id)
    assert (gone.state, gone.attempts, len(gone.log), gone.last_error) == (
        "undelivered",
        2,
        2,
        "down",
    )
    assert store.retry_undelivered() == [gone.id]
    [again] = store.claim_due(lease_seconds=30)
    assert again[0].attempts == 0 and len(again[0].log) == 2
    assert store.record(again[0], attempt(True), delivered=True, give_up=False, retry_in=0)
    [done] = store.of_job(job.id)
    assert (done.state, done.last_error) == ("delivered", None) and done.delivered_at is not None
    assert store.retry_undelivered() == []


def test_a_lapsed_claim_lets_another_sender_take_the_delivery(
    repo: Repository, store: DeliveryStore
) -> None:
    [(job, _)] = repo.create_jobs([new_job(deliveries=NOTICES[:1])])
    repo.cancel(job.id)
    assert len(store.claim_due(lease_seconds=0.05)) == 1
    time.sleep(0.1)
    assert len(store.claim_due(lease_seconds=30)) == 1


def test_backoff_doubles_from_the_base_and_is_capped() -> None:
    assert [backoff_seconds(n, 10) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert backoff_seconds(40, 10) == MAX_BACKOFF_SECONDS
