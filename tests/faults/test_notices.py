"""A worker killed right after committing an outcome, before sending its notices: the sweep sends
them, once each."""

from __future__ import annotations

import json
from collections.abc import Callable

import psycopg
import redis

from jobs.contracts import FINAL_STATUSES, Status
from producers import Client
from store.deliveries import DeliveryStore
from tests.faults.conftest import Stack, photo, sweeping
from tests.faults.servers import RedisServer
from tests.receivers import WEBHOOK_SECRET, WebhookReceiver
from tests.support import eventually

NOTICE_QUEUE = "advisor.notify.app.results"


def queued_notices(url: str) -> list[dict[str, object]]:
    client = redis.Redis.from_url(url)
    try:
        return [json.loads(raw) for raw in client.lrange(NOTICE_QUEUE, 0, -1)]
    finally:
        client.close()


def claims_waiting(url: str) -> int:
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'UPDATE deliveries SET claimed_until%%'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_notices_of_a_worker_killed_after_its_commit_arrive_through_the_sweep(
    make_stack: Callable[..., Stack], postgres_url: str, redis_server: RedisServer
) -> None:
    broker = redis_server.url
    receiver = WebhookReceiver().start()
    stack = make_stack(
        postgres_url, broker, text_limit="160", max_output_tokens="1800",
        webhook_secret=WEBHOOK_SECRET, webhook_allowed_hosts="127.0.0.1",
    )  # fmt: skip
    [worker] = stack.start_workers(1)
    with Client(stack.settings) as client:
        handle = client.submit(photo(1), "ansel", variant=stack.variant, callback_url=receiver.url,
                               notify="app.critique_done", notify_queue=NOTICE_QUEUE)  # fmt: skip
    # The notices' rows locked as a stuck transaction would: the worker can commit the outcome
    # (another table) but not claim its notices, so it dies holding none of them.
    with psycopg.connect(postgres_url.replace("+psycopg", "")) as lock:
        locked = lock.execute(
            "SELECT id FROM deliveries WHERE job_id = %s FOR UPDATE", (handle.id,)
        ).fetchall()
        assert len(locked) == 2
        eventually(
            "the outcome committed",
            lambda: Status(stack.repo.get(handle.id).status) in FINAL_STATUSES,
            90,
        )
        # The worker's notice thread is now waiting on the lock to claim them.
        eventually("the worker's claim waiting", lambda: claims_waiting(postgres_url) == 1, 10)
        worker.kill()
        assert worker.proc.returncode == -9
        assert receiver.received == [] and queued_notices(broker) == []
        with sweeping(stack.settings, interval=0.3) as rounds:
            lock.rollback()
            eventually("both notices, through the sweep", lambda: len(receiver.received) == 1
                       and len(queued_notices(broker)) == 1, 30)  # fmt: skip
            settled = len(rounds)
            eventually("four more sweep rounds", lambda: len(rounds) >= settled + 4, 20)
    receiver.stop()
    job = stack.repo.get(handle.id)
    assert job.status == Status.SUCCEEDED
    [hook] = receiver.received
    assert hook.is_signed and hook.body["job_id"] == job.id and hook.body["status"] == "succeeded"
    [task] = queued_notices(broker)
    assert task["headers"]["task"] == "app.critique_done"  # type: ignore[index]
    deliveries = DeliveryStore(stack.repo.engine).of_job(job.id)
    assert [d.state for d in deliveries] == ["delivered", "delivered"]
    assert all(d.log[-1]["by"].startswith("sweep ") and len(d.log) == 1 for d in deliveries)
    print(f"worker killed after its commit: sent=2 delivered={len(receiver.received) + 1} "
          f"retried=0 duplicated=0 (by the sweep)")  # fmt: skip
