"""The publisher's own message path sends what Celery's send_task would, task-sent event too."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from jobs.broker import SEND_RETRY_POLICY, analyze_queue
from jobs.contracts import ANALYZE_TASK, BASE_VARIANT, queue_for
from jobs.settings import Settings
from producers.publisher import Publisher, request_for
from store.models import Job

# Differ on every message: the task id and what is derived from it, and the event clock.
PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag", "uuid", "clock", "timestamp"}


def a_job() -> Job:
    return Job(
        id=str(uuid.uuid4()), advisor="ansel", variant=BASE_VARIANT,
        image_ref="sha256:" + "a" * 64, shadow_of=None,
    )  # fmt: skip


def same_but_ids(ours: dict[str, Any], celerys: dict[str, Any]) -> dict[str, Any]:
    """The fields where the two differ, per-message ids aside."""
    return {
        key: (ours.get(key), celerys.get(key))
        for key in set(ours) | set(celerys)
        if key not in PER_MESSAGE and ours.get(key) != celerys.get(key)
    }


def test_a_sent_job_is_the_message_and_event_send_task_makes(
    tmp_path: Path, redis_url: str
) -> None:
    server = redis.Redis.from_url(redis_url)
    events = server.pubsub()
    # kombu's Redis fanout (the events exchange) is PUBLISH on a channel named with the
    # database: other databases' events on the shared server stay out.
    events.psubscribe(f"/{server.connection_pool.connection_kwargs['db']}.celeryev/*")
    publisher = Publisher(Settings(data_dir=tmp_path, broker_url=redis_url))
    try:
        job = a_job()
        with publisher.app.producer_or_acquire() as producer:
            publisher.app.send_task(
                ANALYZE_TASK, kwargs=request_for(job).model_dump(),
                queue=analyze_queue(BASE_VARIANT), routing_key=queue_for(BASE_VARIANT),
                producer=producer, retry=True, retry_policy=SEND_RETRY_POLICY,
            )  # fmt: skip
        assert publisher.send([job]).sent == [job.id]
        # LPUSHed: the list's head is the newer message, ours.
        ours, celerys = (json.loads(raw) for raw in server.lrange(queue_for(BASE_VARIANT), 0, 1))
        assert ours["body"] == celerys["body"]
        assert same_but_ids(ours["headers"], celerys["headers"]) == {}
        assert same_but_ids(ours["properties"], celerys["properties"]) == {}
        sent: list[tuple[bytes, dict[str, Any]]] = []
        deadline = time.monotonic() + 5
        while len(sent) < 2 and time.monotonic() < deadline:
            message = events.get_message(timeout=0.5)
            if message and message["type"] == "pmessage":
                sent.append((message["channel"], json.loads(message["data"])))
        assert len(sent) == 2, "one task-sent event per message"
        (channel_a, event_a), (channel_b, event_b) = sent
        assert channel_a == channel_b and channel_a.endswith(b"celeryev/task.sent")
        first, second = (json.loads(base64.b64decode(e["body"])) for e in (event_a, event_b))
        assert first["type"] == "task-sent" and first["queue"] == queue_for(BASE_VARIANT)
        assert same_but_ids(first, second) == {}
    finally:
        publisher.close()
        events.close()
        server.close()


def test_a_busy_embedded_broker_at_a_process_first_publish_delays_it_and_the_jobs_go_out(
    tmp_path: Path,
) -> None:
    # The embedded broker's file is locked past SQLite's 5 s busy timeout (as when two workers
    # start on it) while a fresh process publishes for the first time: its first queue declare
    # fails, kombu reconnects and declares again. The producer must follow onto the new
    # channel; before, it published on the closed one and `advisor demo` died with
    # "internal error (AttributeError)".
    import sqlite3
    import subprocess
    import sys
    import threading

    broker = tmp_path / "broker.db"
    settings = Settings(broker_url=f"sqla+sqlite:///{broker}",
                        database_url=f"sqlite:///{tmp_path / 'jobs.db'}")  # fmt: skip
    first = Publisher(settings)  # another process's publisher made the broker's tables
    assert not first.send([a_job()]).unsent
    first.close()
    probe = (
        "import json, uuid\n"
        "from jobs.settings import Settings\nfrom producers.publisher import Publisher\n"
        "from store.models import Job\n"
        f"settings = Settings(broker_url={settings.broker_url!r}, "
        f"database_url={settings.database_url!r})\n"
        "jobs = [Job(id=str(uuid.uuid4()), variant=v, shadow_of=None)\n"
        "        for v in ('fine_tuned', 'base')]\n"
        "result = Publisher(settings).send(jobs)\n"
        "print(json.dumps({'sent': result.sent, 'unsent': result.unsent,\n"
        "                  'ids': [job.id for job in jobs]}))"
    )
    lock = sqlite3.connect(broker, isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")
    # Past the first attempt's 5 s, before the retries (0.2 s then 0.7 s apart) run out.
    release = threading.Timer(7.0, lambda: lock.execute("COMMIT"))
    release.start()
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    finally:
        release.join()
        lock.close()
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["unsent"] == [] and result["sent"] == result["ids"], result
