"""The client: validated submits, rows before messages, idempotency, waits, lossless publishes."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine, func, select

from jobs.contracts import (
    BASE_VARIANT,
    FINE_TUNED_VARIANT,
    MESSAGE_VERSION,
    Assignment,
    Status,
)
from jobs.errors import InvalidImage, UnknownAdvisor, UnknownVariant
from photos.intake import Limits, ModelGeometry, prepare
from producers import Client, JobTimeout, SubmitItem
from producers.errors import InvalidSubmission
from producers.publisher import BATCH_JOBS
from producers.services import Services
from store.lifecycle import Outcome, StartOutcome
from store.models import Job, StoredImage
from store.submissions import NewJob
from tests.photo_files import card, encode, exif, private_leftovers
from tests.producers.conftest import (
    FINE_TUNED_ADVISOR,
    RedisServer,
    beat,
    make_settings,
    photo,
    queued_requests,
)


@pytest.fixture
def services(
    tmp_path: Path, sqlite_db: str, registry_file: Path, redis_url: str
) -> Iterator[Services]:
    with Services(make_settings(tmp_path, sqlite_db, registry_file, redis_url)) as built:
        yield built


@pytest.fixture
def client(services: Services) -> Client:
    return Client(services=services)


def row_count(engine: Engine, table: type[Job] | type[StoredImage] = Job) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def test_an_inline_image_is_stored_and_its_job_published_once_to_its_variant_queue(
    services: Services, client: Client, redis_url: str
) -> None:
    handle = client.submit(photo(1), FINE_TUNED_ADVISOR)
    job = client.status(handle.id)
    assert job.image_ref == f"sha256:{job.image_sha256}"
    assert job.subject == job.image_sha256
    assert services.repository.image_bytes(job.image_sha256) == photo(1)
    assert (job.status, job.publish_attempts, job.publish_error) == (Status.QUEUED, 1, None)
    assert job.published_at is not None
    assert queued_requests(redis_url, job.variant) == [
        {"version": MESSAGE_VERSION, "job_id": job.id, "variant": job.variant}
    ]


def test_a_path_job_reads_the_file_once_and_stores_it_like_an_upload(
    services: Services, client: Client, image_root: Path
) -> None:
    (image_root / "a.png").write_bytes(photo(2))
    handle = client.submit("a.png", FINE_TUNED_ADVISOR, subject="user-7")
    (image_root / "a.png").unlink()  # no worker needs the file any more
    job = client.status(handle.id)
    assert job.image_ref == f"sha256:{job.image_sha256}"
    assert services.repository.image_bytes(job.image_sha256) == photo(2)
    assert job.subject == "user-7"
    assert row_count(services.engine, StoredImage) == 1


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "AVIF", "HEIF"])
def test_an_inline_photo_is_stored_without_gps_or_serials_and_its_row_keeps_its_facts(
    services: Services, client: Client, fmt: str
) -> None:
    data = encode(card(), fmt, exif=exif(6, gps=True))
    limits, geometry = Limits(10**8, 10**8), ModelGeometry(448 * 448)

    job = client.status(client.submit(data, FINE_TUNED_ADVISOR).id)
    again = client.status(client.submit(data, FINE_TUNED_ADVISOR).id)

    stored = services.repository.image_bytes(job.image_sha256)
    assert stored is not None and private_leftovers(stored) == []
    assert job.image_sha256 == hashlib.sha256(stored).hexdigest() == again.image_sha256
    assert row_count(services.engine, StoredImage) == 1
    twin = prepare(encode(card(), fmt, exif=exif(6)), limits, geometry)
    assert job.photo == twin.photo.to_dict()
    sent = prepare(data, limits, geometry).image
    assert prepare(stored, limits, geometry).image.tobytes() == sent.tobytes()


def test_a_photo_without_gps_is_stored_as_sent_and_a_path_photo_without_its_gps(
    services: Services, client: Client, image_root: Path
) -> None:
    plain, located = (
        encode(card(), "JPEG", exif=exif(1)),
        encode(card(), "JPEG", exif=exif(1, gps=True)),
    )
    (image_root / "located.jpg").write_bytes(located)

    job = client.status(client.submit(plain, FINE_TUNED_ADVISOR).id)
    path_job = client.status(client.submit("located.jpg", FINE_TUNED_ADVISOR).id)

    assert services.repository.image_bytes(job.image_sha256) == plain
    stored = services.repository.image_bytes(path_job.image_sha256)
    assert stored is not None and private_leftovers(stored) == []
    assert path_job.image_sha256 == hashlib.sha256(stored).hexdigest()
    assert (image_root / "located.jpg").read_bytes() == located  # the file is left as it was
    assert row_count(services.engine, StoredImage) == 2


def test_a_pil_image_with_gps_exif_is_stored_as_png_without_it(
    services: Services, client: Client
) -> None:
    with Image.open(io.BytesIO(encode(card(), "JPEG", exif=exif(1, gps=True)))) as img:
        img.load()
    job = client.status(client.submit(img, FINE_TUNED_ADVISOR).id)

    stored = services.repository.image_bytes(job.image_sha256)
    assert stored is not None and stored.startswith(b"\x89PNG")
    assert private_leftovers(stored) == []
    assert job.photo is not None and job.photo["capture"]["iso"] == 400


def test_a_pil_image_is_accepted_and_stored_as_png(client: Client) -> None:
    handle = client.submit(Image.new("RGB", (20, 10), (1, 2, 3)), FINE_TUNED_ADVISOR)
    assert client.status(handle.id).image_ref.startswith("sha256:")


@pytest.mark.parametrize(
    ("item", "error"),
    [
        (SubmitItem(photo(3), "nobody"), UnknownAdvisor),
        (SubmitItem(b"not an image", FINE_TUNED_ADVISOR), InvalidImage),
        (SubmitItem(b"", FINE_TUNED_ADVISOR), InvalidImage),
        (SubmitItem(photo(3, size=(300, 300)), FINE_TUNED_ADVISOR), InvalidImage),
        (SubmitItem("/etc/hostname", FINE_TUNED_ADVISOR), InvalidImage),
        (SubmitItem("../outside.png", FINE_TUNED_ADVISOR), InvalidImage),
        (SubmitItem(photo(3), FINE_TUNED_ADVISOR, subject=""), InvalidSubmission),
        (SubmitItem(photo(3), FINE_TUNED_ADVISOR, idempotency_key="k" * 201), InvalidSubmission),
        (SubmitItem(photo(3), FINE_TUNED_ADVISOR, variant="nope"), UnknownVariant),
        (SubmitItem(photo(3), "weston", variant=FINE_TUNED_VARIANT), UnknownVariant),
    ],
)
def test_an_invalid_item_anywhere_in_a_batch_writes_nothing_and_sends_nothing(
    tmp_path: Path, sqlite_db: str, registry_file: Path, redis_url: str,
    item: SubmitItem, error: type[Exception],
) -> None:  # fmt: skip
    settings = make_settings(tmp_path, sqlite_db, registry_file, redis_url, max_image_pixels=10_000)
    with Services(settings) as services:
        with pytest.raises(error):
            Client(services=services).submit_many([SubmitItem(photo(4), FINE_TUNED_ADVISOR), item])
        assert (row_count(services.engine), row_count(services.engine, StoredImage)) == (0, 0)
    assert queued_requests(redis_url, BASE_VARIANT) == []


def test_the_same_idempotency_key_returns_the_same_job_and_publishes_once(
    services: Services, client: Client, redis_url: str
) -> None:
    first = client.submit(photo(5), FINE_TUNED_ADVISOR, idempotency_key="upload-5")
    again = client.submit(photo(5), FINE_TUNED_ADVISOR, idempotency_key="upload-5")
    assert (again.id, first.created, again.created) == (first.id, True, False)
    assert again.published
    assert row_count(services.engine) == 1
    assert [r["job_id"] for r in queued_requests(redis_url, first.variant)] == [first.id]


def test_a_batch_lands_each_job_on_the_queue_its_row_names(
    services: Services, client: Client, redis_url: str, sqlite_db: str
) -> None:
    beat(sqlite_db, FINE_TUNED_VARIANT)
    services.rollouts.set(
        FINE_TUNED_ADVISOR, {BASE_VARIANT: 0.5, FINE_TUNED_VARIANT: 0.5},
        known_variants=services.registry.names, actor="t", reason="t",
    )  # fmt: skip
    items = [{"image": photo(i), "advisor": FINE_TUNED_ADVISOR} for i in range(40)]
    handles = client.submit_many(items)
    by_variant = {
        v: {h.id for h in handles if h.variant == v} for v in (BASE_VARIANT, FINE_TUNED_VARIANT)
    }
    assert all(by_variant.values()), "a 50/50 split of 40 jobs used one variant only"
    for variant, ids in by_variant.items():
        requests = queued_requests(redis_url, variant)
        assert sorted(r["job_id"] for r in requests) == sorted(ids)
        assert {r["variant"] for r in requests} == {variant}
    assert {h.assignment for h in handles} == {Assignment.SPLIT}


def test_a_batch_larger_than_one_broker_pipeline_is_published_whole(
    client: Client, redis_url: str
) -> None:
    count = BATCH_JOBS * 2 + 1
    handles = client.submit_many([SubmitItem(photo(i), FINE_TUNED_ADVISOR) for i in range(count)])
    assert all(h.published for h in handles)
    requests = queued_requests(redis_url, BASE_VARIANT)
    assert sorted(r["job_id"] for r in requests) == sorted(h.id for h in handles)


def test_wait_times_out_with_the_job_status_named(client: Client) -> None:
    handle = client.submit(photo(6), FINE_TUNED_ADVISOR)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="still queued") as info:
        handle.wait(timeout=0.3)
    assert isinstance(info.value, JobTimeout) and info.value.status == Status.QUEUED
    assert time.monotonic() - started < 2


def test_wait_follows_progress_until_the_job_succeeds(services: Services, client: Client) -> None:
    handle = client.submit(photo(7), FINE_TUNED_ADVISOR)

    def play_worker() -> None:
        repo = services.repository
        assert repo.start(handle.id, "w1", lease_seconds=30, max_attempts=3) is StartOutcome.STARTED
        for tokens in (10, 20, 30):
            repo.record_progress(handle.id, "w1", tokens, lease_seconds=30)
            # Each step waits until the waiter reported it: a busy machine may poll late.
            deadline = time.monotonic() + 20
            while (Status.RUNNING, tokens) not in seen and time.monotonic() < deadline:
                time.sleep(0.01)
        repo.succeed(handle.id, "w1", Outcome({"overall_score": 7.0}, "{}", 5, 30, 450, "1"))

    seen: list[tuple[str, int]] = []
    worker = threading.Thread(target=play_worker)
    worker.start()
    job = client.wait(
        handle.id, timeout=90, poll=0.05, on_update=lambda j: seen.append((j.status, j.progress))
    )
    worker.join()
    assert job.status == Status.SUCCEEDED and job.llm_outputs == {"overall_score": 7.0}
    assert (Status.RUNNING, 20) in seen


def test_jobs_submitted_while_the_broker_is_down_are_all_published_once_after_recovery(
    tmp_path: Path, sqlite_db: str, registry_file: Path, own_redis: RedisServer
) -> None:
    with Services(make_settings(tmp_path, sqlite_db, registry_file, own_redis.url)) as services:
        client = Client(services=services)
        client.submit(photo(100), FINE_TUNED_ADVISOR)  # a warm pool: the outage hits a live one
        own_redis.stop()
        started = time.monotonic()
        handles = client.submit_many([SubmitItem(photo(i), FINE_TUNED_ADVISOR) for i in range(5)])
        assert time.monotonic() - started < 8, "a dead broker must fail the publish fast"
        assert not any(h.published for h in handles)
        rows = [client.status(h.id) for h in handles]
        assert {(r.status, r.published_at) for r in rows} == {(Status.QUEUED, None)}
        assert all(r.publish_error and "unreachable" in r.publish_error for r in rows)

        own_redis.start()  # an empty Redis: the earlier message is gone with the old process
        assert services.outbox.republish() == 5
        assert services.outbox.republish() == 0
        requests = queued_requests(own_redis.url, BASE_VARIANT)
        assert sorted(r["job_id"] for r in requests) == sorted(h.id for h in handles)
        assert all(client.status(h.id).published_at is not None for h in handles)


def test_the_sweep_leaves_a_fresh_unpublished_row_to_its_producer_but_takes_an_old_one(
    services: Services, client: Client, redis_url: str
) -> None:
    new = NewJob(FINE_TUNED_ADVISOR, "0" * 64, "sha256:" + "0" * 64, "s", BASE_VARIANT,
                 Assignment.SPLIT, 0)  # fmt: skip
    [(job, _)] = services.repository.create_jobs([new])  # a producer that died before publishing
    assert services.outbox.republish() == 0
    assert services.outbox.republish(grace=0) == 1
    assert [r["job_id"] for r in queued_requests(redis_url, BASE_VARIANT)] == [job.id]


@pytest.mark.filterwarnings(
    # kombu's SQLAlchemy transport uses the `noload` strategy SQLAlchemy 2.1 deprecates.
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)
def test_the_embedded_broker_needs_no_server(
    tmp_path: Path, sqlite_db: str, registry_file: Path
) -> None:
    settings = make_settings(tmp_path, sqlite_db, registry_file)  # broker_url "" -> embedded
    assert settings.is_embedded
    with Client(settings) as client:
        handle = client.submit(photo(8), FINE_TUNED_ADVISOR)
    broker_db = settings.resolved_broker_url.removeprefix("sqla+sqlite:///")
    assert os.path.exists(broker_db)
    with sqlite3.connect(broker_db) as conn:
        rows = conn.execute(
            "SELECT q.name, m.payload FROM kombu_message m JOIN kombu_queue q ON m.queue_id = q.id"
        ).fetchall()
    assert [name for name, _ in rows] == ["advisor.base"]
    assert handle.id in rows[0][1]
