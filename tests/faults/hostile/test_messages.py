"""Hostile broker messages and planted rows: the worker fails the job and serves on."""

from __future__ import annotations

import hashlib
import json
import pickle
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Producer

from jobs.broker import analyze_queue, make_celery
from jobs.contracts import ANALYZE_TASK, Assignment, DeliveryKind, ErrorKind, Status
from producers import Client
from producers.services import Services
from store.deliveries import DeliveryStore
from store.models import Job
from store.submissions import NewDelivery, NewJob
from tests.faults.hostile.stack import (
    IDLE,
    HostileStack,
    photo,
    record,
    wait_final,
)
from tests.support import eventually

pytestmark = pytest.mark.slow


def publish_raw(stack: HostileStack, body: Any, **options: Any) -> None:
    queue = analyze_queue("base")
    with Connection(stack.settings.resolved_broker_url) as conn:
        Producer(conn.default_channel).publish(
            body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue],
            **options,
        )  # fmt: skip


def headers(job_id: str = "", **extra: Any) -> dict[str, Any]:
    return {"lang": "py", "task": ANALYZE_TASK, "id": job_id or str(uuid.uuid4()),
            "root_id": None, "parent_id": None, "group": None, "retries": 0, **extra}  # fmt: skip


JSON = {"content_type": "application/json", "content_encoding": "utf-8"}


def test_hostile_broker_messages_on_postgresql_never_stop_the_worker(files: HostileStack) -> None:
    repo = files.repo
    marker = files.root / "unpickled"
    data = photo(30)
    sha = hashlib.sha256(data).hexdigest()
    # Stored, never published: the only message naming it is the lying one below.
    [(row, _)] = repo.create_jobs(
        [NewJob("ansel", sha, f"sha256:{sha}", "liar", "base", Assignment.SPLIT, 0)],
        images={sha: data},
    )
    real = row.id
    refused_job = files.idle_job()
    client_payload = {"job_id": real, "advisor": "weston", "variant": "base",
                      "image_ref": "path:/etc/passwd"}  # fmt: skip
    nul = "job\x00" + "x" * 10
    messages: dict[str, Callable[[], None]] = {
        "bad timelimit header and a NUL job id (the crash loop)": lambda: publish_raw(
            files,
            json.dumps([[], {"job_id": nul}, {}]),
            headers=headers(nul, timelimit="nope"),
            **JSON,
        ),
        "a 5,000-character job id": lambda: publish_raw(
            files,
            json.dumps(
                [
                    [],
                    {
                        "job_id": "x" * 5000,
                        "advisor": "ansel",
                        "variant": "base",
                        "image_ref": "sha256:" + "0" * 64,
                    },
                    {},
                ]
            ),
            headers=headers(),
            **JSON,
        ),
        "an unknown job": lambda: publish_raw(
            files,
            json.dumps(
                [
                    [],
                    {
                        "job_id": str(uuid.uuid4()),
                        "advisor": "ansel",
                        "variant": "base",
                        "image_ref": "sha256:" + "0" * 64,
                    },
                    {},
                ]
            ),
            headers=headers(),
            **JSON,
        ),
        "a lone surrogate in the job id": lambda: publish_raw(
            files, '[[], {"job_id": "a\\ud800b"}, {}]', headers=headers(), **JSON
        ),
        "a pickle": lambda: publish_raw(
            files,
            pickle.dumps(((), {"job_id": real}, {}, _Touch(marker))),
            headers=headers(),
            content_type="application/x-python-serialize",
            content_encoding="binary",
        ),
        "undecodable JSON": lambda: publish_raw(files, b'[[], {"job', headers=headers(), **JSON),
        "a dict body": lambda: publish_raw(
            files, json.dumps({"job_id": refused_job}), headers=headers(), **JSON
        ),
        "a far-future eta": lambda: publish_raw(
            files,
            json.dumps([[], {"job_id": str(uuid.uuid4())}, {}]),
            headers=headers(eta="2099-01-01T00:00:00+00:00"),
            **JSON,
        ),
        "no task id": lambda: publish_raw(
            files, json.dumps([[], {}, {}]), headers={"task": ANALYZE_TASK}, **JSON
        ),
        "the message lies about the image and advisor": lambda: _send(files, client_payload),
    }
    for name, send in messages.items():
        send()
        record(f"broker: {name}", False)
    # Remote control: shutdown and pool_restart are refused; inspection still answers.
    app = make_celery(files.settings, "hostile-control")
    try:
        replies = app.control.broadcast("shutdown", reply=True, timeout=3)
        restart = app.control.broadcast("pool_restart", reply=True, timeout=3)
        pings = app.control.ping(timeout=3)
    finally:
        app.close()
    [job] = wait_final(files, [real])
    files.assert_alive()
    with Client(files.settings) as client:
        good = client.submit(photo(31), "ansel")
    [done] = wait_final(files, [good.id])
    assert done.status == Status.SUCCEEDED, done.error
    files.assert_alive()
    assert not marker.exists()
    # The row, not the message, said what to serve: its own image and advisor.
    assert (job.status, job.advisor) == (Status.SUCCEEDED, "ansel"), job.error
    refused = repo.get(refused_job)
    assert (refused.status, refused.error_kind) == (Status.FAILED, ErrorKind.INVALID_REQUEST)
    log = files.worker.output()
    assert "Unrecoverable error" not in log
    assert "its timelimit header is 'nope'" in log
    for name in messages:
        record(f"broker: {name}", True)
    assert replies and all("refused" in str(r) for r in replies), replies
    assert restart and all("refused" in str(r) for r in restart), restart
    assert pings, "inspection (ping) must still answer"
    record("broker: remote shutdown", True)
    record("broker: remote pool_restart", True)


def test_a_file_swapped_after_submit_changes_nothing_the_photo_was_stored_at_submit(
    files: HostileStack,
) -> None:
    target = files.root / "images" / "swap.jpg"
    target.write_bytes(photo(40))
    with Client(files.settings) as client:
        # Held on an idle variant until the file changed, then moved to base.
        handle = client.submit(target, "ansel", variant=IDLE)
    target.write_bytes(photo(41))
    with files.repo.engine.begin() as conn:
        conn.execute(Job.__table__.update().where(Job.id == handle.id).values(variant="base"))
    with Services(files.settings) as services:
        services.outbox.publish([files.repo.get(handle.id)])
    [job] = wait_final(files, [handle.id])
    assert job.status == Status.SUCCEEDED, job.error
    assert job.image_ref == f"sha256:{job.image_sha256}"
    assert hashlib.sha256(photo(40)).hexdigest() == job.image_sha256
    record("an image file swapped after submit", True)


class _Touch:
    """Unpickling this creates a file: the proof that a pickle body was never deserialized."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _send(stack: HostileStack, payload: dict[str, Any]) -> None:
    app = make_celery(stack.settings, "hostile-producer")
    try:
        app.send_task(ANALYZE_TASK, kwargs=payload, queue=analyze_queue("base"))
    finally:
        app.close()


def test_notice_rows_planted_with_broker_keys_fail_and_leave_the_worker_alive(
    files: HostileStack,
) -> None:
    """Rows written around the producers, naming kombu's own keys: a worker used to die on
    WRONGTYPE here, and again after a restart."""
    ids = []
    for seed, queue in enumerate(("unacked", "unacked_index", "_kombu.binding.celery")):
        data = photo(40 + seed)
        sha = hashlib.sha256(data).hexdigest()
        notice = NewDelivery(DeliveryKind.TASK, "app.done", queue)
        [(row, _)] = files.repo.create_jobs(
            [NewJob("ansel", sha, f"sha256:{sha}", f"planted-{seed}", "base",
                    Assignment.FORCED, 0, deliveries=(notice,))],
            images={sha: data},
        )  # fmt: skip
        _send(files, {"job_id": row.id, "advisor": "ansel", "variant": "base",
                      "image_ref": row.image_ref})  # fmt: skip
        ids.append(row.id)
    wait_final(files, ids, timeout=180)
    deliveries = DeliveryStore(files.repo.engine)

    def states() -> list[str]:
        return [d.state for i in ids for d in deliveries.of_job(i)]

    eventually("three undelivered notices", lambda: states() == ["undelivered"] * 3, 30,
               poll=0.3, context=lambda: f"states: {states()}")  # fmt: skip
    files.assert_alive()
