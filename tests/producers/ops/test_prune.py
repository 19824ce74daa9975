"""Retention: old images no live job needs are deleted, live ones never; job rows on request."""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from sqlalchemy import update

from jobs.clock import utcnow
from jobs.contracts import PRUNE_TASK, Assignment, ErrorKind
from jobs.settings import Settings
from producers.ops.prune import beat_schedule, prune, register_prune_task
from store import migrate
from store.db import engine_for
from store.models import Job, StoredImage
from store.repository import Repository
from store.submissions import NewJob


def stored_job(repo: Repository, sha: str) -> str:
    new = NewJob("ansel", sha, f"sha256:{sha}", sha[:8], "base", Assignment.SPLIT, 0)
    [(job, _)] = repo.create_jobs([new], images={sha: b"x" * 100})
    return job.id


def age(repo: Repository, days: float) -> None:
    """Everything stored so far happened `days` ago."""
    then = utcnow() - timedelta(days=days)
    with repo.engine.begin() as conn:
        conn.execute(update(StoredImage).values(created_at=then))
        conn.execute(update(Job).where(Job.completed_at.is_not(None)).values(completed_at=then))


def test_old_images_go_unless_a_queued_or_running_job_needs_them(migrated_url: str) -> None:
    repo = Repository(engine_for(migrated_url))
    done, queued, running = (stored_job(repo, c * 64) for c in "abc")
    repo.fail(done, ErrorKind.INTERNAL, "finished long ago")
    repo.start(running, "w1", lease_seconds=60, max_attempts=3)
    age(repo, 40)
    fresh = stored_job(repo, "d" * 64)
    repo.fail(fresh, ErrorKind.INTERNAL, "finished now")

    report = prune(repo, older_than_days=30)

    assert (report.images, report.image_bytes, report.jobs) == (1, 100, None)
    assert repo.image_bytes("a" * 64) is None
    assert all(repo.image_bytes(c * 64) for c in "bcd")
    assert len(repo.find()) == 4


def test_with_jobs_old_finished_rows_and_then_their_images_go(migrated_url: str) -> None:
    repo = Repository(engine_for(migrated_url))
    done, queued = stored_job(repo, "a" * 64), stored_job(repo, "b" * 64)
    repo.fail(done, ErrorKind.INTERNAL, "old")
    age(repo, 10)

    assert prune(repo, older_than_days=30, jobs=True).jobs == 0
    report = prune(repo, older_than_days=5, jobs=True)

    assert (report.jobs, report.images) == (1, 1)
    assert [j.id for j in repo.find()] == [queued]
    assert "1 finished job row(s)" in report.summary()


def test_a_resubmitted_old_image_is_touched_and_survives_the_next_prune(
    migrated_url: str,
) -> None:
    repo = Repository(engine_for(migrated_url))
    first = stored_job(repo, "e" * 64)
    repo.fail(first, ErrorKind.INTERNAL, "done")
    age(repo, 40)
    stored_job(repo, "e" * 64)  # the same photo again: its stored copy is new once more
    repo.fail(repo.find()[-1].id, ErrorKind.INTERNAL, "done too")
    assert prune(repo, older_than_days=30).images == 0


def test_the_prune_task_registers_and_is_scheduled_daily(tmp_path, sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    app = Celery("prune-test")
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, retention_days=7)
    task = register_prune_task(app, settings)
    assert app.tasks[PRUNE_TASK].name == task.name == PRUNE_TASK
    assert task.run() == {"older_than_days": 7.0, "images": 0, "image_bytes": 0, "jobs": None}
    entry = beat_schedule()["advisor-prune"]
    assert (entry["task"], entry["schedule"]) == (PRUNE_TASK, 86_400.0)
