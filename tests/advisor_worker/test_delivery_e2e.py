"""Outcome notices from a real worker: one completion task per finished job to an upstream Celery
app on its own Redis, and one signed webhook, while the sweep runs alongside."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.broker import analyze_queue, make_celery
from jobs.contracts import ANALYZE_TASK, Assignment, DeliveryKind, Status
from jobs.settings import Settings
from producers import Client, Services
from producers.commands.sweep import sweeper
from store.db import engine_for
from store.deliveries import DeliveryStore
from store.repository import Repository
from store.submissions import NewDelivery, NewJob
from tests.advisor_worker.test_worker_e2e import photo, settings_of, setup_env
from tests.producers.conftest import RedisServer, own_redis  # noqa: F401 - a fixture
from tests.receivers import WEBHOOK_SECRET, UpstreamWorker, WebhookReceiver
from tests.support import eventually, running_workers, wait_until_final

NOTIFY = {"notify": "app.critique_done", "notify_queue": "advisor.notify.app.results"}


# Rounds far enough apart that the worker's fast path, right after each outcome, gets its
# turn even on a busy machine (at 0.3 s a loaded worker lost every notice to the sweep, at 3 s
# 6 of 10); which sender wins any one notice is a race, and either is correct.
SWEEP_INTERVAL = 8.0


@contextmanager
def sweeping(services: Services) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=sweeper(services).run_loop,
                              kwargs={"interval": SWEEP_INTERVAL, "stop": stop},
                              daemon=True)  # fmt: skip
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def test_each_finished_job_sends_one_task_and_one_signed_webhook(
    tmp_path: Path,
    tiny_model_dir: Path,
    redis_url: str,
    own_redis: RedisServer,  # noqa: F811
) -> None:
    env = setup_env(tmp_path, tiny_model_dir, f"sqlite:///{tmp_path / 'advisor.db'}", redis_url)
    receiver = WebhookReceiver().start()
    env.values.update(
        ADVISOR_WEBHOOK_SECRET=WEBHOOK_SECRET, ADVISOR_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        # The upstream app's own broker, not the service's.
        ADVISOR_NOTIFY_BROKER_URL=own_redis.url,
    )  # fmt: skip
    settings = Settings(**{
        **settings_of(env).model_dump(), "webhook_secret": WEBHOOK_SECRET,
        "webhook_allowed_hosts": ["127.0.0.1"], "notify_broker_url": own_redis.url,
    })  # fmt: skip
    repo = Repository(engine_for(settings.resolved_database_url))
    upstream = UpstreamWorker(tmp_path, own_redis.url).start()
    try:
        with (
            Services(settings) as services,
            Client(services=services) as client,
            sweeping(services),
            running_workers(env, ["base"], tmp_path),
        ):
            handles = [client.submit(photo(i), "ansel", callback_url=receiver.url, **NOTIFY)
                       for i in range(4)]  # fmt: skip
            ids = [h.id for h in handles] + [broken_job(repo, settings, receiver.url)]
            wait_until_final(repo, ids, timeout=120)
            eventually("every notice", lambda: len(upstream.received()) >= len(ids)
                       and len(receiver.received) >= len(ids), 30)  # fmt: skip
            time.sleep(2 * SWEEP_INTERVAL)  # two more sweep rounds: nothing may arrive twice
    finally:
        upstream.stop()
        receiver.stop()
    jobs = {i: repo.get(i) for i in ids}
    assert [j.status for j in jobs.values()] == [Status.SUCCEEDED] * 4 + [Status.FAILED]
    tasks = upstream.received()
    assert Counter(t["outcome"]["job_id"] for t in tasks) == Counter(ids)  # exactly one each
    hooks = receiver.by_job()
    assert {job_id: len(got) for job_id, got in hooks.items()} == dict.fromkeys(ids, 1)
    deliveries = DeliveryStore(repo.engine)
    senders: Counter[str] = Counter()
    for task in tasks:
        outcome, job = task["outcome"], jobs[task["outcome"]["job_id"]]
        assert outcome["status"] == job.status and outcome["advisor"] == "ansel"
        assert (outcome["variant"], outcome["model_used"]) == (job.variant, job.model_used)
        if job.status == Status.SUCCEEDED:
            assert outcome["analysis"] == job.llm_outputs and "error" not in outcome
        else:
            assert outcome["error_kind"] == "invalid_image" and outcome["error"] == job.error
        [hook] = hooks[job.id]
        assert hook.is_signed and hook.body == outcome
        by_kind = {d.kind: d for d in deliveries.of_job(job.id)}
        assert task["task_id"] == by_kind[DeliveryKind.TASK].id
        assert hook.delivery_id == by_kind[DeliveryKind.WEBHOOK].id
        for delivery in by_kind.values():
            [attempt] = delivery.log
            assert delivery.state == "delivered" and attempt["ok"]
            senders[attempt["by"].split(" ")[0]] += 1
    arrived = len(tasks) + len(receiver.received)
    print(f"notices from a live worker: sent={2 * len(ids)} delivered={arrived} "
          f"retried=0 duplicated={arrived - 2 * len(ids)} "
          f"(sent by {dict(senders)})")  # fmt: skip
    assert senders["worker"] >= 1  # the fast path, right after each outcome, is taken


def broken_job(repo: Repository, settings: Settings, callback_url: str) -> str:
    """A job whose image the worker rejects (producers refuse such bytes up front)."""
    data = b"\xff\xd8\xff not a jpeg"
    sha = hashlib.sha256(data).hexdigest()
    notices = (
        NewDelivery(DeliveryKind.TASK, NOTIFY["notify"], NOTIFY["notify_queue"]),
        NewDelivery(DeliveryKind.WEBHOOK, callback_url),
    )
    new = NewJob("ansel", sha, f"sha256:{sha}", "broken", "base", Assignment.FORCED, 0,
                 deliveries=notices)  # fmt: skip
    [(job, _)] = repo.create_jobs([new], images={sha: data})
    app = make_celery(settings, "test-producer")
    payload = {"job_id": job.id, "advisor": "ansel", "variant": "base", "image_ref": job.image_ref}
    app.send_task(ANALYZE_TASK, kwargs=payload, queue=analyze_queue("base"))
    app.close()
    return job.id
