"""A started job always ends: whatever its handling raises fails it at once as `internal`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from advisor_worker.analyze import AnalyzeJob
from advisor_worker.runtime import WorkerRuntime
from advisor_worker.scope import Delivery, Scope
from jobs.contracts import Assignment, ErrorKind, Status
from jobs.settings import Settings
from photos.intake import Limits, ModelGeometry
from store.db import engine_for
from store.lifecycle import StartOutcome
from store.repository import Repository
from store.submissions import NewJob


@pytest.fixture
def repo(migrated_url: str) -> Repository:
    return Repository(engine_for(migrated_url))


def started(repo: Repository, ref: str, sha: str) -> str:
    [(job, _)] = repo.create_jobs([NewJob("ansel", sha, ref, "s", "base", Assignment.FORCED, 0)])
    assert repo.start(job.id, "w1", lease_seconds=60, max_attempts=3) is StartOutcome.STARTED
    return job.id


def run(repo: Repository, job_id: str, image_bytes: object) -> str:
    """The job's message through a scope whose catch-all is the worker's own."""
    runtime = SimpleNamespace(
        settings=Settings(), repo=repo, worker="w1", image_bytes=image_bytes,
        limits=Limits(1_000_000, 1_000_000),
        loaded=SimpleNamespace(geometry=ModelGeometry(448 * 448)),
    )  # fmt: skip

    def handle(delivery: Delivery) -> str:
        delivery.start(repo.get(job_id))
        assert delivery.job is not None
        job = AnalyzeJob(runtime, delivery.job, delivery.retry_until, 5.0, delivery.progress)  # type: ignore[arg-type]
        return job.run()

    def failed(delivery: Delivery, exc: Exception) -> str:
        return WorkerRuntime.failed(runtime, delivery, exc)  # type: ignore[arg-type]

    scope = Scope(handle, [], soft_limit=5.0, hard_limit=11.0, on_error=failed)
    return scope.run(scope.delivery({"job_id": job_id}))


@pytest.mark.parametrize(
    "error",
    [PermissionError(13, "Permission denied"), RuntimeError("Symlink loop from 'a'"),
     ValueError("conversion from P to RGB not supported"), KeyError("mode")],
    ids=lambda e: type(e).__name__,
)  # fmt: skip
def test_an_unexpected_error_fails_the_started_job_at_once_as_internal_with_a_reference(
    repo: Repository, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = started(repo, "sha256:" + "a" * 64, "a" * 64)

    def image_bytes(_ref: str, _until: float) -> tuple[bytes, str | None]:
        raise error

    assert run(repo, job_id, image_bytes) == ErrorKind.INTERNAL.value
    job = repo.get(job_id)
    assert (job.status, job.error_kind) == (Status.FAILED, ErrorKind.INTERNAL)
    # The tenant reads a fixed text and a reference; the log has the exception under it.
    assert job.error and job.error.startswith("Internal error (reference ")
    assert str(error.args[-1]) not in job.error and type(error).__name__ not in job.error
    reference = job.error.removesuffix(")").rsplit(" ", 1)[-1]
    assert any(reference in r.getMessage() and r.exc_info for r in caplog.records)
    assert job.lease_until is None


def test_bytes_that_differ_from_the_submitted_digest_fail_as_invalid_image(
    repo: Repository, tmp_path: Path
) -> None:
    job_id = started(repo, f"path:{tmp_path / 'a.jpg'}", hashlib.sha256(b"submitted").hexdigest())
    assert run(repo, job_id, lambda _ref, _until: (b"swapped since", "a.jpg")) == "invalid_image"
    job = repo.get(job_id)
    assert job.error_kind == ErrorKind.INVALID_IMAGE
    assert job.error and "changed since it was submitted" in job.error
