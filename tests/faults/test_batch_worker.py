"""A worker process generating B=4 analyses at once, over a real broker, on the tiny model."""

from __future__ import annotations

import hashlib
import io
import signal
from collections.abc import Callable

import pytest
from PIL import Image

from jobs.analysis import Analysis
from jobs.broker import analyze_queue, make_celery
from jobs.contracts import ANALYZE_TASK, Assignment, ErrorKind, Status
from producers import Client, SubmitItem
from store.models import Job
from store.submissions import NewJob
from tests.faults.conftest import Stack, Tally, sweeping, tally
from tests.faults.servers import RedisServer
from tests.support import eventually, most_at_once, wait_until_final

pytestmark = pytest.mark.slow
# Width x height of the photos: each size gives a different image-token count.
SIZES = [(96, 64), (64, 96), (128, 128), (160, 48), (48, 160), (112, 80), (80, 112), (144, 96),
         (200, 120), (72, 72)]  # fmt: skip


def photo(seed: int, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    img = Image.effect_mandelbrot(size, (-2 + seed * 0.013, -1, 1, 1), 30).convert("RGB")
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def submit(stack: Stack, photos: list[bytes]) -> list[str]:
    with Client(stack.settings) as client:
        handles = client.submit_many(
            [SubmitItem(data, "ansel", variant=stack.variant) for data in photos]
        )
    assert all(h.published for h in handles), [h.publish_error for h in handles]
    return [h.id for h in handles]


def wait_all_generating(stack: Stack, ids: list[str], timeout: float = 90) -> str:
    """Until every job runs on one worker with output tokens recorded; that worker's name."""

    def worker() -> str | None:
        jobs = stack.repo.find(Job.id.in_(ids))
        if not all(j.status == Status.RUNNING and j.progress > 0 for j in jobs):
            return None
        assert len({j.worker for j in jobs}) == 1, {j.worker for j in jobs}
        return str(jobs[0].worker)

    return eventually(f"the {len(ids)} jobs all generating", worker, timeout, poll=0.05)


def test_ten_jobs_of_mixed_sizes_succeed_with_several_generated_at_once(
    make_stack: Callable[..., Stack], redis_server: RedisServer, sqlite_url: str
) -> None:
    # More jobs than slots: rows join the batch while others decode.
    stack = make_stack(sqlite_url, redis_server.url, worker_batch="4", text_limit="32")
    stack.start_workers(1)
    ids = submit(stack, [photo(i, size) for i, size in enumerate(SIZES)])
    jobs = list(wait_until_final(stack.repo, ids, timeout=180).values())

    assert [j.status for j in jobs] == [Status.SUCCEEDED] * len(SIZES), [j.error for j in jobs]
    for job in jobs:
        Analysis.model_validate(job.llm_outputs)
    assert len({j.prompt_tokens for j in jobs}) >= 5  # the sizes really differ
    assert most_at_once(jobs) >= 3
    [beat] = stack.repo.live_workers(60, stack.variant)
    assert beat.slots == 4


def test_a_corrupt_image_and_a_timed_out_job_fail_alone_inside_a_batch(
    make_stack: Callable[..., Stack], redis_server: RedisServer, sqlite_url: str
) -> None:
    # Long outputs (~1000 tokens), so a 1.5 s soft limit lands mid-generation even under load.
    stack = make_stack(sqlite_url, redis_server.url, worker_batch="4", text_limit="160",
                       max_output_tokens="2400")  # fmt: skip
    stack.start_workers(1)
    good = submit(stack, [photo(i, SIZES[i]) for i in range(4)])
    # Producers refuse both; here they reach the worker as hand-made rows and messages.
    app = make_celery(stack.settings, "test-producer")
    crafted: dict[str, str] = {}
    for name, data, soft_limit in [("corrupt", b"\xff\xd8\xff garbage", None),
                                   ("slow", photo(9, (96, 64)), 1.5)]:  # fmt: skip
        sha = hashlib.sha256(data).hexdigest()
        new = NewJob("ansel", sha, f"sha256:{sha}", name, stack.variant, Assignment.FORCED, 0)
        [(job, _)] = stack.repo.create_jobs([new], images={sha: data})
        crafted[name] = job.id
        payload = {"job_id": job.id, "advisor": "ansel", "variant": stack.variant,
                   "image_ref": f"sha256:{sha}"}  # fmt: skip
        app.send_task(ANALYZE_TASK, kwargs=payload, queue=analyze_queue(stack.variant),
                      soft_time_limit=soft_limit)  # fmt: skip
    app.close()
    good += submit(stack, [photo(i, SIZES[i]) for i in range(4, 8)])
    jobs = wait_until_final(stack.repo, [*good, *crafted.values()], timeout=300)

    assert [jobs[i].status for i in good] == [Status.SUCCEEDED] * 8
    corrupt, slow = jobs[crafted["corrupt"]], jobs[crafted["slow"]]
    assert (corrupt.status, corrupt.error_kind) == (Status.FAILED, ErrorKind.INVALID_IMAGE)
    assert corrupt.output_tokens is None  # it failed before it took a slot
    assert (slow.status, slow.error_kind) == (Status.FAILED, ErrorKind.TIMEOUT)
    assert "Soft time limit of 1.5s" in (slow.error or "")
    assert slow.output_tokens and slow.output_tokens > 0
    assert slow.raw_output and slow.raw_output.startswith('{"')
    assert most_at_once([jobs[i] for i in good]) >= 3


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_server").url)
    return str(request.getfixturevalue("rabbitmq_url"))


def test_four_jobs_of_a_killed_batch_worker_finish_once_each_on_another_worker(
    make_stack: Callable[..., Stack], broker_url: str, sqlite_url: str
) -> None:
    # Long outputs (~1000 tokens) so the kill lands mid-generation for all four rows.
    stack = make_stack(sqlite_url, broker_url, worker_batch="4", text_limit="160",
                       max_output_tokens="1800", worker_live_window="5")  # fmt: skip
    [victim] = stack.start_workers(1)
    with sweeping(stack.settings):
        ids = submit(stack, [photo(i, SIZES[i]) for i in range(4)])
        wait_all_generating(stack, ids)
        victim.kill()
        [survivor] = stack.start_workers(1)
        jobs = wait_until_final(stack.repo, ids, timeout=240)
    result = tally(stack.repo, ids, [victim, survivor])
    print(result.line(f"kill -9 of a B=4 worker ({broker_url.split(':')[0]})"))
    assert result == Tally(sent=4, finished=4, succeeded=4, lost=0, duplicated=0)
    assert victim.proc.returncode == -signal.SIGKILL
    for job in jobs.values():
        assert job.attempts == 2
        assert job.worker is not None and f"-{survivor.proc.pid}@" in job.worker


def test_warm_shutdown_of_a_batch_worker_finishes_its_four_jobs_and_exits_zero(
    make_stack: Callable[..., Stack], redis_server: RedisServer, sqlite_url: str
) -> None:
    stack = make_stack(sqlite_url, redis_server.url, worker_batch="4", text_limit="160",
                       max_output_tokens="1800")  # fmt: skip
    [worker] = stack.start_workers(1)
    ids = submit(stack, [photo(i, SIZES[i]) for i in range(4)])
    name = wait_all_generating(stack, ids)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=180) == 0, worker.output()[-2000:]
    jobs = stack.repo.find(Job.id.in_(ids))
    assert [(j.status, j.attempts, j.worker) for j in jobs] == [(Status.SUCCEEDED, 1, name)] * 4
    [beat] = [b for b in stack.repo.live_workers(3600) if b.worker == name] or [None]
    assert beat is None  # stopped: no longer counted as live
