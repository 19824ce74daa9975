"""A worker killed with SIGKILL mid-generation: another worker takes the job over, once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jobs.contracts import Status
from store.models import Job
from tests.faults.conftest import Stack, Tally, sweeping, tally
from tests.support import wait_generating, wait_until_final


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    # Redis: a private server, so no other test session can flush or consume these queues.
    if request.param == "redis":
        return str(request.getfixturevalue("redis_server").url)
    return str(request.getfixturevalue("rabbitmq_url"))


def test_a_job_whose_worker_is_killed_mid_generation_succeeds_once_on_another_worker(
    make_stack: Callable[..., Stack], broker_url: str, sqlite_url: str
) -> None:
    # Long outputs (~1000 tokens) so the kill lands mid-generation.
    stack = make_stack(sqlite_url, broker_url, text_limit="160", max_output_tokens="1800",
                       worker_live_window="5")  # fmt: skip
    workers = stack.start_workers(2)
    with sweeping(stack.settings):
        ids = stack.submit(2)
        victim = wait_generating(stack.repo, ids, 60)
        [killed] = [w for w in workers if f"-{w.proc.pid}@" in (victim.worker or "")]
        [survivor] = [w for w in workers if w is not killed]
        # A batching worker may hold both jobs: those it held when killed run a second time.
        held = {j.id for j in stack.repo.find(Job.id.in_(ids)) if j.worker == victim.worker
                and j.status == Status.RUNNING}  # fmt: skip
        killed.kill()
        jobs = wait_until_final(stack.repo, ids, timeout=150)
    result = tally(stack.repo, ids, workers)
    print(result.line(f"kill -9 mid-generation ({broker_url.split(':')[0]})"))
    assert result == Tally(sent=2, finished=2, succeeded=2, lost=0, duplicated=0)
    assert killed.proc.returncode == -9
    assert victim.id in held
    for job_id in held:
        taken_over = jobs[job_id]
        assert taken_over.attempts == 2
        assert taken_over.worker is not None and f"-{survivor.proc.pid}@" in taken_over.worker
    assert [jobs[i].attempts for i in ids if i not in held] == [1] * (len(ids) - len(held))
    assert survivor.proc.poll() is None
