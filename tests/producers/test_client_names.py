"""Client-chosen notice names live in their own namespace: never the broker's or the database's."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy import update

from jobs.clock import utcnow
from jobs.contracts import Status, is_notify_queue, queue_for
from notices.courier import REFUSED_NAME, Courier
from producers import Client, InvalidSubmission, Services
from store.deliveries import DeliveryStore
from store.models import Job
from tests.producers.conftest import make_settings, photo

# Keys kombu keeps in Redis for itself, the service's own queues, Celery's, and SQL objects.
BROKER_OBJECTS = [
    "unacked", "unacked_index", "unacked_mutex", "_kombu.binding.celery",
    "_kombu.binding.advisor.base", "_kombu.binding.celery.pidbox", "_kombu.binding.celeryev",
    "_kombu.binding.reply.celery.pidbox", "celery", "celeryev", "celery.pidbox",
    "reply.celery.pidbox", "advisor.base", "advisor.base.shadow", "advisor.fine_tuned",
    "advisor.notify", "advisor.notify.", "advisor.notify..x", "advisor.notify._kombu",
    "advisor.notify.unacked\x06\x163", "advisor.notify.a b", "advisor.notify.*", "*",
    "unacked\x06\x163", "celery-task-meta-1", "advisor.notify.app\n",
]  # fmt: skip
DATABASE_OBJECTS = [
    "jobs", "deliveries", "public.jobs", "alembic_version", "pg_catalog.pg_class",
    "information_schema.tables", "sqlite_master", "jobs; DROP TABLE jobs", "jobs--",
]  # fmt: skip
ACCEPTED = ["advisor.notify.app", "advisor.notify.app.results", "advisor.notify.App:v2-x_y",
            "advisor.notify.unacked", "advisor.notify." + "a" * 100]  # fmt: skip


@pytest.mark.parametrize("queue", BROKER_OBJECTS + DATABASE_OBJECTS)
def test_a_notify_queue_outside_the_client_namespace_is_refused_at_submit(
    tmp_path: Path, sqlite_db: str, registry_file: Path, queue: str
) -> None:
    with (
        Services(make_settings(tmp_path, sqlite_db, registry_file)) as services,
        Client(services=services) as client,
    ):
        with pytest.raises(InvalidSubmission, match="advisor.notify.NAME"):
            client.submit(photo(1), "ansel", notify="app.done", notify_queue=queue)
        assert services.repository.find() == []


@pytest.mark.parametrize("task", ["_kombu.binding.x", "", " app", "app done", "1app",
                                  "a" * 101, "app\x00done", "celery.pidbox\n"])  # fmt: skip
def test_a_notify_task_name_outside_the_pattern_is_refused_at_submit(
    tmp_path: Path, sqlite_db: str, registry_file: Path, task: str
) -> None:
    with (
        Services(make_settings(tmp_path, sqlite_db, registry_file)) as services,
        Client(services=services) as client,
        pytest.raises(InvalidSubmission, match="give both notify"),
    ):
        client.submit(photo(1), "ansel", notify=task, notify_queue="advisor.notify.app")


def test_a_variant_name_with_a_trailing_newline_names_no_queue() -> None:
    with pytest.raises(ValueError, match="Invalid variant name"):
        queue_for("base\n")


@pytest.mark.parametrize("queue", ACCEPTED)
def test_a_queue_in_the_client_namespace_is_accepted(queue: str) -> None:
    assert is_notify_queue(queue)


@pytest.mark.parametrize("queue", ["unacked", "unacked_index", "_kombu.binding.celery",
                                   "advisor.base"])  # fmt: skip
def test_a_row_planted_with_a_broker_key_is_recorded_failed_and_the_key_is_untouched(
    tmp_path: Path, sqlite_db: str, registry_file: Path, redis_url: str, queue: str
) -> None:
    settings = make_settings(tmp_path, sqlite_db, registry_file).model_copy(
        update={"broker_url": redis_url, "notify_broker_url": redis_url}
    )
    keys = redis.Redis.from_url(redis_url)
    keys.hset(queue, "planted", "kombu's own")  # a hash: an LPUSH would be WRONGTYPE
    with Services(settings) as services, Client(services=services) as client:
        handle = client.submit(photo(3), "ansel", notify="app.done",
                               notify_queue="advisor.notify.app")  # fmt: skip
        store = DeliveryStore(services.repository.engine)
        [delivery] = store.of_job(handle.id)
        with services.repository.engine.begin() as conn:
            # Written around the producers, as a hostile or old row would be.
            conn.execute(update(type(delivery)).where(type(delivery).id == delivery.id)
                         .values(queue=queue))  # fmt: skip
            conn.execute(
                update(Job)
                .where(Job.id == handle.id)
                .values(
                    status=Status.FAILED, completed_at=utcnow(), error_kind="internal", error="x"
                )
            )
        courier = Courier(settings, store, sender="test")
        try:
            done = courier.deliver_job(handle.id)  # must not raise
        finally:
            courier.close()
        [after] = store.of_job(handle.id)
    assert done.undelivered == [delivery.id]
    assert after.state == "undelivered" and after.last_error == REFUSED_NAME
    assert keys.type(queue) == b"hash" and keys.hget(queue, "planted") == b"kombu's own"
