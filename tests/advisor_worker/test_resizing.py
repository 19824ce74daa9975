"""Shrinking a queue's workers with SIGTERM (Celery's warm shutdown) loses and repeats nothing."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import pytest

from jobs.contracts import Status
from producers import Client, SubmitItem
from store.db import engine_for
from store.repository import Repository
from tests.advisor_worker.test_worker_e2e import photo, settings_of, setup_env
from tests.support import Env, WorkerProcess, eventually, running_workers, wait_until_final

JOBS = 20
SHUTDOWN = "worker: Warm shutdown"


@pytest.fixture(params=["embedded", "redis"])
def env(request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path) -> Env:
    if request.param == "redis":
        broker = request.getfixturevalue("redis_url")
    else:
        broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    return setup_env(tmp_path, tiny_model_dir, f"sqlite:///{tmp_path / 'advisor.db'}", broker)


def name_of(worker: WorkerProcess) -> str:
    return f"{worker.variant}-{worker.proc.pid}@{socket.gethostname()}"


def wait_until_busy(repo: Repository, ids: list[str], workers: list[WorkerProcess]) -> None:
    """Until each of `workers` has a job running: then a signal lands mid-task."""
    wanted = {name_of(w) for w in workers}

    def all_busy() -> bool:
        busy = {j.worker for j in (repo.get(i) for i in ids) if j.status == Status.RUNNING}
        return wanted <= busy

    eventually(f"workers {sorted(wanted)} all busy", all_busy, 120, poll=0.05)


def analyses_after_shutdown(worker: WorkerProcess) -> list[str]:
    """Job ids the worker finished after it logged the warm shutdown."""
    _, _, after = worker.output().partition(SHUTDOWN)
    return re.findall(r"advisor\.analyze (\S+) -> ", after)


def test_sigterm_to_two_of_three_workers_mid_task_loses_and_repeats_no_job(
    env: Env, tmp_path: Path
) -> None:
    settings = settings_of(env)
    repo = Repository(engine_for(settings.resolved_database_url))
    with running_workers(env, ["base", "base", "base"], tmp_path) as workers:
        leaving, staying = workers[:2], workers[2]
        with Client(settings) as client:
            handles = client.submit_many(
                [SubmitItem(photo(i), "ansel", variant="base") for i in range(JOBS)]
            )
        ids = [h.id for h in handles]
        wait_until_busy(repo, ids, leaving)
        for worker in leaving:
            worker.proc.send_signal(signal.SIGTERM)
        exit_codes = [w.proc.wait(timeout=120) for w in leaving]
        wait_until_final(repo, ids, timeout=240)
        assert staying.proc.poll() is None

    assert exit_codes == [0, 0], [w.output()[-2000:] for w in leaving]
    jobs = [repo.get(i) for i in ids]
    assert [j.status for j in jobs] == [Status.SUCCEEDED] * JOBS, [
        (j.status, j.error) for j in jobs if j.status != Status.SUCCEEDED
    ]
    # Started once each: no job was redelivered to a second worker.
    assert [j.attempts for j in jobs] == [1] * JOBS
    logs = "".join(w.output() for w in workers)
    for job_id in ids:
        assert len(re.findall(rf"advisor\.analyze {job_id} -> ", logs)) == 1, job_id
    # Warm shutdown: a worker that was mid-task finished its tasks (up to B in flight), then
    # left. On the embedded (polling) transport it also runs what it had already fetched.
    finished_late = [analyses_after_shutdown(w) for w in leaving]
    batch = settings.worker_batch
    most = 2 * batch if settings.is_embedded else batch
    assert all(len(late) <= most for late in finished_late), finished_late
    assert any(finished_late), "neither worker was mid-task at SIGTERM"
    by_worker = {name_of(w): 0 for w in workers}
    for job in jobs:
        by_worker[str(job.worker)] += 1
    for worker in leaving:
        for job_id in analyses_after_shutdown(worker):
            assert repo.get(job_id).worker == name_of(worker)
    # The one that stayed drained the rest of the queue.
    assert by_worker[name_of(staying)] > max(by_worker[name_of(w)] for w in leaving)
