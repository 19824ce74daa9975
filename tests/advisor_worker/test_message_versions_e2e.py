"""Rolling upgrades on a real worker: old-format messages are served, unknown versions refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from jobs.broker import analyze_queue, make_celery
from jobs.contracts import ANALYZE_TASK, Assignment, ErrorKind, Status
from producers import Client
from store.db import engine_for
from store.repository import Repository
from store.submissions import NewJob
from tests.advisor_worker.test_worker_e2e import photo, settings_of, setup_env
from tests.support import Env, running_workers, wait_until_final


@pytest.fixture
def env(tmp_path: Path, tiny_model_dir: Path) -> Env:
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    return setup_env(tmp_path, tiny_model_dir, f"sqlite:///{tmp_path / 'advisor.db'}", broker)


def test_a_version_1_message_is_served_and_an_unknown_version_fails_its_job_naming_the_served(
    env: Env, tmp_path: Path
) -> None:
    settings = settings_of(env)
    repo = Repository(engine_for(settings.resolved_database_url))
    ids: dict[str, str] = {}
    for seed, name in enumerate(["v1", "v2_extra", "v3"]):
        data = photo(10 + seed)
        sha = hashlib.sha256(data).hexdigest()
        new = NewJob("ansel", sha, f"sha256:{sha}", name, "base", Assignment.FORCED, 0)
        [(job, _)] = repo.create_jobs([new], images={sha: data})
        ids[name] = job.id
    v1 = repo.get(ids["v1"])
    # Hand-published as producers of each release build them.
    bodies = {
        # The release before versions: advisor and image_ref in the body, no `version`.
        "v1": {"job_id": v1.id, "advisor": "ansel", "variant": "base", "image_ref": v1.image_ref},
        # A newer producer's optional field is ignored.
        "v2_extra": {"version": 2, "job_id": ids["v2_extra"], "variant": "base", "hint": "x"},
        "v3": {"version": 3, "job_id": ids["v3"], "variant": "base"},
    }
    app = make_celery(settings, "old-producer")
    for body in bodies.values():
        app.send_task(ANALYZE_TASK, kwargs=body, queue=analyze_queue("base"))
    app.close()
    with running_workers(env, ["base"], tmp_path) as [worker]:
        wait_until_final(repo, list(ids.values()), timeout=120)
        with Client(settings) as client:
            current = client.submit(photo(20), "ansel", variant="base")
        wait_until_final(repo, [current.id], timeout=60)
        assert worker.proc.poll() is None
    for name in ("v1", "v2_extra"):
        job = repo.get(ids[name])
        assert (job.status, job.error) == (Status.SUCCEEDED, None), name
        assert job.attempts == 1
    refused = repo.get(ids["v3"])
    assert (refused.status, refused.error_kind) == (Status.FAILED, ErrorKind.INVALID_REQUEST)
    assert refused.error and "Message version 3" in refused.error
    assert "serves versions 1, 2" in refused.error
    assert repo.get(current.id).status == Status.SUCCEEDED
