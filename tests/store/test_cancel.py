"""Cancelling: a queued job ends at once and never starts; a running one is asked, then recorded."""

from __future__ import annotations

import time

import pytest

from jobs.contracts import Status
from store.db import engine_for
from store.lifecycle import CancelOutcome, StartOutcome
from store.repository import Repository
from tests.store.test_repository import create, outcome, start


@pytest.fixture
def repo(migrated_url: str) -> Repository:
    return Repository(engine_for(migrated_url))


def test_a_queued_job_is_cancelled_at_once_and_its_message_is_then_dropped(
    repo: Repository,
) -> None:
    job_id = create(repo)
    result, job = repo.cancel(job_id)
    assert (result, job.status) == (CancelOutcome.CANCELLED, Status.CANCELLED)
    assert job.completed_at is not None and job.error_kind is None
    assert start(repo, job_id) is StartOutcome.FINISHED
    after = repo.get(job_id)
    assert (after.status, after.attempts, after.started_at) == (Status.CANCELLED, 0, None)


def test_a_running_job_gets_a_request_its_worker_sees_and_records(repo: Repository) -> None:
    job_id, other = create(repo), create(repo, subject="u2")
    assert start(repo, job_id) is StartOutcome.STARTED
    assert start(repo, other, "w2") is StartOutcome.STARTED
    assert repo.cancel_requests([job_id, other]) == {}
    result, job = repo.cancel(job_id)
    assert (result, job.status) == (CancelOutcome.REQUESTED, Status.RUNNING)
    first = job.cancel_requested_at
    assert first is not None
    assert list(repo.cancel_requests([job_id, other])) == [job_id]
    # A repeated cancel keeps the first request's time.
    assert repo.cancel(job_id)[1].cancel_requested_at == first
    assert not repo.record_cancelled(job_id, "w2", "not the holder")
    assert repo.record_cancelled(job_id, "w1", "Cancelled while generating", raw_output='{"ima',
                                 output_tokens=3, inference_ms=40)  # fmt: skip
    done = repo.get(job_id)
    assert (done.status, done.raw_output, done.output_tokens) == (Status.CANCELLED, '{"ima', 3)
    assert not repo.succeed(job_id, "w1", outcome())
    assert repo.get(other).status == Status.RUNNING


def test_a_finished_job_cannot_be_cancelled_and_keeps_its_outcome(repo: Repository) -> None:
    job_id = create(repo)
    start(repo, job_id)
    assert repo.succeed(job_id, "w1", outcome())
    result, job = repo.cancel(job_id)
    assert (result, job.status) == (CancelOutcome.FINISHED, Status.SUCCEEDED)
    assert job.cancel_requested_at is None
    again = create(repo, subject="u3")
    repo.cancel(again)
    assert repo.cancel(again)[0] is CancelOutcome.FINISHED


def test_a_cancelled_running_job_whose_worker_died_is_never_started_or_requeued(
    repo: Repository,
) -> None:
    job_id, swept = create(repo), create(repo, subject="u2")
    for jid in (job_id, swept):
        assert start(repo, jid, lease=0.05) is StartOutcome.STARTED
        repo.cancel(jid)
    time.sleep(0.1)
    assert not repo.requeue(swept, "lease expired")
    assert start(repo, job_id, "w2") is StartOutcome.CANCELLED
    assert repo.cancel_abandoned(swept)
    for jid in (job_id, swept):
        job = repo.get(jid)
        assert (job.status, job.attempts) == (Status.CANCELLED, 1)
