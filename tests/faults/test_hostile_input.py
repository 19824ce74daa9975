"""Hostile and broken input reaches a live worker: each is refused, the worker stays up."""

from __future__ import annotations

import hashlib
import json
import pickle
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kombu import Connection, Producer

from jobs.broker import analyze_queue, make_celery
from jobs.contracts import ANALYZE_TASK, Assignment, ErrorKind, Status
from producers.commands.sweep import sweeper
from producers.services import Services
from store.submissions import NewJob
from tests.faults.conftest import Stack, Tally, photo, tally
from tests.faults.servers import RedisServer
from tests.support import wait_until_final


class TouchOnUnpickle:
    """Unpickling this creates a file: the proof that a pickle body was never deserialized."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def task_headers(job_id: str | None = None) -> dict[str, Any]:
    return {"lang": "py", "task": ANALYZE_TASK, "id": job_id or str(uuid.uuid4()),
            "root_id": None, "parent_id": None, "group": None, "retries": 0}  # fmt: skip


def publish_raw(stack: Stack, body: Any, **options: Any) -> None:
    queue = analyze_queue(stack.variant)
    with Connection(stack.settings.resolved_broker_url) as conn:
        producer = Producer(conn.default_channel)
        producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key,
                         declare=[queue], **options)  # fmt: skip


def new_job(stack: Stack, ref: str, name: str, images: dict[str, bytes] | None = None) -> str:
    sha = hashlib.sha256(ref.encode()).hexdigest()
    new = NewJob("ansel", sha, ref, name, stack.variant, Assignment.FORCED, 0)
    [(job, _)] = stack.repo.create_jobs([new], images=images)
    return job.id


def test_pickles_broken_messages_and_escaping_or_oversize_images_are_refused_by_a_live_worker(
    make_stack: Callable[..., Stack], sqlite_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    stack = make_stack(
        sqlite_url, redis_server.url, max_image_bytes="100000", worker_live_window="3"
    )
    roots, marker = tmp_path / "images", tmp_path / "unpickled"
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(photo(1))
    (roots / "link.jpg").symlink_to(outside)
    (roots / "big.png").write_bytes(b"\x89PNG" + b"\0" * 150_000)
    pickled_job = new_job(stack, "sha256:" + "0" * 64, "pickled")
    garbled_job = new_job(stack, "sha256:" + "1" * 64, "garbled")
    typed_job = new_job(stack, "sha256:" + "2" * 64, "typed")
    images = {
        "traversal": (f"path:../{outside.name}", "contains '..'"),
        "symlink": ("path:link.jpg", "outside the allowed roots"),
        "absolute": (f"path:{outside}", "outside the allowed roots"),
        "oversize": ("path:big.png", "the limit is 100000"),
    }
    image_jobs = {name: new_job(stack, ref, name) for name, (ref, _) in images.items()}

    exploit = pickle.dumps(((), {"job_id": pickled_job}, {}, TouchOnUnpickle(marker)))
    publish_raw(
        stack,
        exploit,
        headers=task_headers(pickled_job),
        content_type="application/x-python-serialize",
        content_encoding="binary",
    )
    publish_raw(
        stack,
        b'[[], {"job_id": "' + garbled_job.encode() + b'", "adv',
        headers=task_headers(garbled_job),
        content_type="application/json",
        content_encoding="utf-8",
    )
    publish_raw(
        stack,
        json.dumps({"job_id": garbled_job}),
        headers=task_headers(garbled_job),
        content_type="application/json",
        content_encoding="utf-8",
    )
    publish_raw(
        stack,
        json.dumps([[], [1, 2], {}]),
        headers=task_headers(),
        content_type="application/json",
        content_encoding="utf-8",
    )
    publish_raw(
        stack,
        json.dumps(5),
        headers=task_headers(),
        content_type="application/json",
        content_encoding="utf-8",
    )
    publish_raw(
        stack,
        json.dumps([[], {}, {}]),
        headers={"task": ANALYZE_TASK},
        content_type="application/json",
        content_encoding="utf-8",
    )
    publish_raw(stack, json.dumps({"not": "a task"}), content_type="application/json",
                content_encoding="utf-8")  # fmt: skip
    app = make_celery(stack.settings, "hostile-producer")
    queue = analyze_queue(stack.variant)
    app.send_task(ANALYZE_TASK, args=[typed_job], queue=queue)
    app.send_task(
        ANALYZE_TASK,
        queue=queue,
        kwargs={"job_id": typed_job, "advisor": 7, "variant": [stack.variant], "image_ref": None},
    )
    for name, job_id in image_jobs.items():
        app.send_task(ANALYZE_TASK, queue=queue, kwargs={
            "job_id": job_id, "advisor": "ansel", "variant": stack.variant,
            "image_ref": images[name][0]})  # fmt: skip
    app.close()
    unreadable = [pickled_job]
    stack.repo.mark_published([typed_job, garbled_job, *image_jobs.values(), *unreadable])

    [worker] = stack.start_workers(1)
    jobs = wait_until_final(stack.repo, [typed_job, garbled_job, *image_jobs.values()], timeout=90)
    good = stack.submit(1, first_seed=5)
    jobs.update(wait_until_final(stack.repo, good, timeout=90))
    assert worker.proc.poll() is None
    assert not marker.exists()
    # An undecodable body names no job the worker could trust: its row stays queued until the
    # sweep finds the queue empty and resends it as a lost message.
    assert {stack.repo.get(j).status for j in unreadable} == {Status.QUEUED}
    time.sleep(stack.settings.worker_live_window)
    with Services(stack.settings) as services:
        assert sorted(sweeper(services).sweep().resent) == sorted(unreadable)
    jobs.update(wait_until_final(stack.repo, unreadable, timeout=60))
    sent = [*unreadable, garbled_job, typed_job, *image_jobs.values(), *good]
    result = tally(stack.repo, sent, [worker])
    print(result.line("hostile input"))

    assert worker.proc.poll() is None
    for job_id in unreadable:  # resent well-formed; their (fake) stored image is missing
        assert jobs[job_id].error_kind == ErrorKind.INVALID_IMAGE, jobs[job_id].error
    # A decodable body that Celery cannot run is refused, and the job it names says why.
    garbled = jobs[garbled_job]
    assert (garbled.status, garbled.error_kind) == (Status.FAILED, ErrorKind.INVALID_REQUEST)
    assert garbled.error and "its body is a dict, not [args, kwargs, embed]" in garbled.error
    typed = jobs[typed_job]
    assert (typed.status, typed.error_kind) == (Status.FAILED, ErrorKind.INVALID_REQUEST)
    assert typed.error and "advisor" in typed.error and "image_ref" in typed.error
    for name, (_ref, reason) in images.items():
        job = jobs[image_jobs[name]]
        assert (job.status, job.error_kind) == (Status.FAILED, ErrorKind.INVALID_IMAGE), name
        assert job.error and reason in job.error, (name, job.error)
    assert jobs[good[0]].status == Status.SUCCEEDED
    assert result == Tally(sent=len(sent), finished=len(sent), succeeded=1, lost=0, duplicated=0)
    log = worker.output()
    for refusal in (
        "Refusing to deserialize untrusted content of type pickle",
        "Can't decode message body",
        "its body is a dict, not [args, kwargs, embed]",
        "its body holds list args and list kwargs",
        "its body is a int",
        "its headers carry no task id",
        "Received and deleted unknown message",
        "Malformed analyze payload",
    ):
        assert refusal in log, refusal
