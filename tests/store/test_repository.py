"""Job state changes: every allowed transition works, every forbidden one is refused."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from jobs.contracts import Assignment, DeliveryKind, ErrorKind, ModelUsed, Status
from jobs.errors import IdempotencyConflict, QuotaExceeded
from store.db import engine_for
from store.lifecycle import ModelInput, Outcome, StartOutcome
from store.models import Delivery, Job
from store.repository import Repository
from store.submissions import NewDelivery, NewJob

LEASE = 30.0


def new_job(**overrides: object) -> NewJob:
    values: dict[str, object] = {
        "advisor": "ansel",
        "image_sha256": "a" * 64,
        "image_ref": "sha256:" + "a" * 64,
        "subject": "user-1",
        "variant": "base",
        "assignment": Assignment.SPLIT,
        "weights_version": 1,
    }
    values.update(overrides)
    return NewJob(**values)  # type: ignore[arg-type]


def outcome() -> Outcome:
    return Outcome({"overall_score": 5.0}, "{}", 10, 20, 1234, "analysis/v1")


@pytest.fixture
def repo(migrated_url: str) -> Repository:
    return Repository(engine_for(migrated_url))


def create(repo: Repository, **overrides: object) -> str:
    [(job, created)] = repo.create_jobs([new_job(**overrides)])
    assert created
    return job.id


def start(repo: Repository, job_id: str, worker: str = "w1", **kw: float) -> StartOutcome:
    return repo.start(job_id, worker, lease_seconds=kw.get("lease", LEASE), max_attempts=3)


def test_a_job_goes_queued_running_succeeded(repo: Repository) -> None:
    job_id = create(repo)
    assert repo.get(job_id).status == Status.QUEUED
    assert start(repo, job_id) is StartOutcome.STARTED
    running = repo.get(job_id)
    assert (running.status, running.attempts, running.worker) == (Status.RUNNING, 1, "w1")
    assert repo.record_progress(job_id, "w1", 17, lease_seconds=LEASE)
    assert repo.get(job_id).progress == 17
    assert repo.succeed(job_id, "w1", outcome())
    done = repo.get(job_id)
    assert done.status == Status.SUCCEEDED
    assert done.llm_outputs == {"overall_score": 5.0}
    assert done.completed_at is not None and done.completed_at.tzinfo is not None


def test_the_photo_is_stored_at_submit_and_the_model_input_by_its_worker(
    repo: Repository,
) -> None:
    submitted = {"format": "HEIF", "width": 3024, "height": 4032, "capture": {"iso": 64}}
    job_id = create(repo, photo=submitted)
    assert repo.get(job_id).photo == submitted
    seen = {**submitted, "orientation_applied": 6}
    model_input = ModelInput(seen, "1+capture", 384, 512, 192)
    start(repo, job_id, "w1")

    assert not repo.attach_model_input(job_id, "w2", model_input)
    assert repo.attach_model_input(job_id, "w1", model_input)
    job = repo.get(job_id)
    assert (job.photo, job.prompt_version) == (seen, "1+capture")
    assert (job.model_image_width, job.model_image_height, job.image_tokens) == (384, 512, 192)


def test_model_used_follows_the_seed_vocabulary(repo: Repository) -> None:
    split_ft = repo.get(create(repo, variant="fine_tuned"))
    forced_ft = repo.get(create(repo, variant="fine_tuned", assignment=Assignment.FORCED))
    fallback = repo.get(create(repo, assignment=Assignment.FALLBACK))
    assert split_ft.model_used == ModelUsed.AB_TEST_FINE_TUNED
    assert forced_ft.model_used == ModelUsed.FINE_TUNED
    assert fallback.model_used == ModelUsed.BASE


def test_a_running_job_can_fail_and_a_queued_one_too(repo: Repository) -> None:
    running = create(repo)
    start(repo, running)
    assert repo.fail(running, ErrorKind.INVALID_OUTPUT, "truncated", worker="w1", raw_output="{")
    assert repo.get(running).raw_output == "{"
    queued = create(repo)
    assert repo.fail(queued, ErrorKind.INVALID_IMAGE, "corrupt")
    assert repo.get(queued).error_kind == ErrorKind.INVALID_IMAGE


def test_a_finished_job_is_never_restarted_or_overwritten(repo: Repository) -> None:
    job_id = create(repo)
    start(repo, job_id)
    repo.succeed(job_id, "w1", outcome())
    assert start(repo, job_id, "w2") is StartOutcome.FINISHED
    assert not repo.succeed(job_id, "w1", outcome())
    assert not repo.fail(job_id, ErrorKind.INTERNAL, "late failure")
    assert not repo.requeue(job_id, "sweep")
    assert not repo.record_progress(job_id, "w1", 99, lease_seconds=LEASE)
    assert repo.get(job_id).status == Status.SUCCEEDED
    assert repo.get(job_id).attempts == 1


def test_a_queued_job_cannot_succeed_without_starting(repo: Repository) -> None:
    job_id = create(repo)
    assert not repo.succeed(job_id, "w1", outcome())
    assert repo.get(job_id).status == Status.QUEUED


def test_another_worker_cannot_finish_a_job_it_does_not_hold(repo: Repository) -> None:
    job_id = create(repo)
    start(repo, job_id, "w1")
    assert not repo.succeed(job_id, "w2", outcome())
    assert not repo.fail(job_id, ErrorKind.INTERNAL, "x", worker="w2")
    assert start(repo, job_id, "w2") is StartOutcome.BUSY
    assert repo.get(job_id).worker == "w1"


def test_an_expired_lease_lets_another_worker_take_over(repo: Repository) -> None:
    job_id = create(repo)
    start(repo, job_id, "w1", lease=0.05)
    time.sleep(0.1)
    assert start(repo, job_id, "w2") is StartOutcome.STARTED
    job = repo.get(job_id)
    assert (job.worker, job.attempts) == ("w2", 2)
    assert not repo.succeed(job_id, "w1", outcome())  # the old holder lost it
    assert repo.succeed(job_id, "w2", outcome())


def test_an_expired_job_is_requeued_by_the_sweep_only_after_its_lease(repo: Repository) -> None:
    job_id = create(repo)
    start(repo, job_id, "w1", lease=0.05)
    assert repo.expired_running() == [] or time.sleep(0.1) is None
    time.sleep(0.1)
    assert [j.id for j in repo.expired_running()] == [job_id]
    assert repo.requeue(job_id, "worker heartbeat lost")
    job = repo.get(job_id)
    assert (job.status, job.published_at) == (Status.QUEUED, None)


def test_a_job_that_keeps_killing_workers_becomes_poison(repo: Repository) -> None:
    job_id = create(repo)
    for n in range(3):
        assert start(repo, job_id, f"w{n}", lease=0.01) is StartOutcome.STARTED
        time.sleep(0.03)
    assert start(repo, job_id, "w9") is StartOutcome.POISON
    job = repo.get(job_id)
    assert (job.status, job.error_kind, job.attempts) == (Status.FAILED, ErrorKind.POISON, 3)


def test_an_idempotency_key_returns_the_stored_job(repo: Repository) -> None:
    [(first, created)] = repo.create_jobs([new_job(idempotency_key="k-1")])
    [(second, again)] = repo.create_jobs([new_job(idempotency_key="k-1", subject="other")])
    assert (created, again) == (True, False)
    assert second.id == first.id and second.subject == "user-1"


def test_a_claimed_key_gets_no_second_deliveries_or_shadows(repo: Repository) -> None:
    notice = NewDelivery(DeliveryKind.TASK, "app.done", "advisor.notify.app.results")
    first, made = repo.create_with_shadows(
        [new_job(idempotency_key="k-s", id="p-1", deliveries=(notice,))], None,
        [new_job(variant="fine_tuned", assignment=Assignment.SHADOW, shadow_of="p-1", id="s-1")],
    )  # fmt: skip
    again, none = repo.create_with_shadows(
        [new_job(idempotency_key="k-s", id="p-2", deliveries=(notice,))], None,
        [new_job(variant="fine_tuned", assignment=Assignment.SHADOW, shadow_of="p-2", id="s-2")],
    )  # fmt: skip
    assert [(j.id, c) for j, c in first + again] == [("p-1", True), ("p-1", False)]
    assert [j.id for j in made] == ["s-1"] and none == []
    assert sorted(j.id for j in repo.find()) == ["p-1", "s-1"]
    with repo.engine.connect() as conn:
        assert conn.execute(select(Delivery.job_id)).scalars().all() == ["p-1"]


def test_a_key_repeated_within_one_batch_makes_one_job(repo: Repository) -> None:
    stored = repo.create_jobs([new_job(idempotency_key="k-2"), new_job(idempotency_key="k-2")])
    [(first, created), (second, again)] = stored
    assert (created, again, second.id) == (True, False, first.id)
    assert [j.id for j in repo.find()] == [first.id]


def test_a_large_batch_is_stored_whole_and_its_keys_all_found_again(repo: Repository) -> None:
    # More keys than one lookup statement takes, so the chunked lookup is exercised.
    batch = [new_job(idempotency_key=f"bulk-{i}", subject=f"s-{i}") for i in range(1201)]
    stored = repo.create_jobs(batch)
    assert all(created for _, created in stored)
    assert len(repo.find()) == 1201
    again = repo.create_jobs(batch)
    assert [job.id for job, _ in again] == [job.id for job, _ in stored]
    assert not any(created for _, created in again)
    assert repo.get(stored[700][0].id).subject == "s-700"


def test_inline_images_are_stored_once_by_digest(repo: Repository) -> None:
    sha = "b" * 64
    repo.create_jobs([new_job(image_sha256=sha)], images={sha: b"png-bytes"})
    repo.create_jobs([new_job(image_sha256=sha)], images={sha: b"png-bytes"})
    assert repo.image_bytes(sha) == b"png-bytes"


def test_drain_moves_only_jobs_that_have_not_started(repo: Repository) -> None:
    waiting = create(repo, variant="fine_tuned")
    running = create(repo, variant="fine_tuned")
    start(repo, running)
    split = {"base": 0.5, "fine_tuned": 0.5}
    moved = repo.reassign_queued([waiting, running], "base", "rollback ansel", weights=split)
    assert moved == [waiting]
    job = repo.get(waiting)
    assert (job.variant, job.reassigned_from, job.model_used) == (
        "base",
        "fine_tuned",
        "ab_test_base",
    )
    assert repo.get(running).variant == "fine_tuned"


def test_a_job_drained_under_an_all_base_split_is_no_longer_labelled_ab_traffic(
    repo: Repository,
) -> None:
    split_job = create(repo, variant="fine_tuned")
    forced_job = create(repo, variant="fine_tuned", assignment=Assignment.FORCED)
    all_base = {"base": 1.0, "fine_tuned": 0.0}
    assert repo.reassign_queued([split_job, forced_job], "base", "rollback", weights=all_base)
    assert repo.get(split_job).model_used == ModelUsed.BASE
    assert repo.get(forced_job).model_used == ModelUsed.BASE
    assert repo.get(split_job).assignment == Assignment.SPLIT


def test_heartbeats_tell_which_variants_are_live(repo: Repository) -> None:
    beat = {"worker": "w1@h", "variant": "fine_tuned", "queue": "advisor.fine_tuned", "host": "h",
            "pid": 1, "base_model": "m", "adapter_fingerprint": "f" * 64}  # fmt: skip
    repo.beat(beat)
    repo.beat(beat)
    assert repo.live_variants(10) == {"fine_tuned"}
    time.sleep(0.2)
    assert repo.live_variants(0.1) == set()


def _race(url: str, job_id: str, worker: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    repo = Repository(engine_for(url))
    barrier.wait()
    results.put((worker, repo.start(job_id, worker, lease_seconds=LEASE, max_attempts=3).value))


def test_two_processes_racing_to_start_a_job_only_one_wins(
    repo: Repository, migrated_url: str
) -> None:
    # Forked from the suite's fork server (its libraries imported: tests/forkserver.py).
    ctx = mp.get_context("forkserver")
    for _ in range(5):
        job_id = create(repo)
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=_race, args=(migrated_url, job_id, f"w{i}", barrier, results))
            for i in range(2)
        ]
        for p in procs:
            p.start()
        outcomes = sorted(results.get(timeout=60)[1] for _ in procs)
        for p in procs:
            p.join(timeout=30)
        assert outcomes == ["busy", "started"]
        assert repo.get(job_id).attempts == 1


def test_concurrent_submits_with_one_key_all_get_the_one_job(repo: Repository) -> None:
    barrier = threading.Barrier(8)

    def submit(_index: int) -> tuple[str, bool]:
        barrier.wait()
        [(job, created)] = repo.create_jobs([new_job(idempotency_key="race-1")])
        return job.id, created

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submit, range(8)))
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(repo.find()) == 1


@pytest.mark.parametrize(
    "change",
    [{"image_sha256": "c" * 64}, {"advisor": "weston"},
     {"variant": "fine_tuned", "assignment": Assignment.FORCED}],
    ids=["other image", "other advisor", "forced variant"],
)  # fmt: skip
def test_a_key_reused_for_a_different_request_is_refused_and_writes_nothing(
    repo: Repository, change: dict[str, object]
) -> None:
    [(first, _)] = repo.create_jobs([new_job(idempotency_key="k-3")])
    with pytest.raises(IdempotencyConflict, match="'k-3' already names a different request"):
        repo.create_jobs([new_job(subject="s-2"), new_job(idempotency_key="k-3", **change)])
    assert [job.id for job in repo.find()] == [first.id]
    with pytest.raises(IdempotencyConflict):
        repo.create_jobs([new_job(idempotency_key="k-4"), new_job(idempotency_key="k-4", **change)])


def test_a_job_started_before_its_publish_was_recorded_still_counts_as_published(
    repo: Repository,
) -> None:
    job_id = create(repo)
    assert start(repo, job_id) is StartOutcome.STARTED
    repo.mark_published([job_id])
    running = repo.get(job_id)
    assert running.status == Status.RUNNING and running.published_at is not None


def test_a_submitter_over_its_in_flight_quota_is_refused_even_when_racing(
    repo: Repository,
) -> None:
    from producers.keys import KeyStore

    KeyStore(repo.engine).create("app")
    for i in range(2):
        repo.create_jobs([new_job(subject=f"s{i}", submitted_by="app")], max_in_flight=3)
    barrier = threading.Barrier(4)

    def submit(index: int) -> str:
        barrier.wait()
        try:
            repo.create_jobs([new_job(subject=f"r{index}", submitted_by="app")], max_in_flight=3)
        except QuotaExceeded:
            return "refused"
        return "made"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(submit, range(4)))
    assert outcomes == ["made", "refused", "refused", "refused"]
    assert len(repo.find(Job.submitted_by == "app")) == 3
    # Finished jobs free the quota; other submitters were never counted.
    [first, *_] = repo.find(Job.submitted_by == "app")
    assert repo.fail(first.id, ErrorKind.INTERNAL, "done")
    repo.create_jobs([new_job(subject="later", submitted_by="app")], max_in_flight=3)
    repo.create_jobs([new_job(subject="mine")])


def test_jobs_created_in_bulk_read_back_with_every_value_the_submit_gave(repo: Repository) -> None:
    # On PostgreSQL unkeyed rows go in by COPY: the values must come back as an INSERT's would.
    photo = {"format": "PNG", "width": 64, "capture": {"make": None, "iso": 100}}
    made = repo.create_jobs([new_job(photo=photo, subject="s-1"), new_job(subject="s-2")])
    assert [created for _job, created in made] == [True, True]
    for job, _created in made:
        stored = repo.get(job.id)
        assert {c.key: getattr(stored, c.key) for c in Job.__table__.columns} == {
            c.key: getattr(job, c.key) for c in Job.__table__.columns
        }
    first = repo.get(made[0][0].id)
    assert first.photo == photo and first.queued_at.tzinfo is not None
    assert first.status == Status.QUEUED and first.attempts == 0 and first.published_at is None
    # No photo is JSON null, as an INSERT stores it.
    assert repo.get(made[1][0].id).photo is None


def test_a_bulk_insert_that_breaks_a_constraint_raises_sqlalchemys_error(repo: Repository) -> None:
    from sqlalchemy.exc import IntegrityError

    job_id = create(repo)
    with pytest.raises(IntegrityError):
        repo.create_jobs([new_job(id=job_id)])
    assert len(repo.find(Job.id == job_id)) == 1


def test_an_image_sent_again_is_stored_once_and_its_time_moves_to_the_new_submit(
    repo: Repository,
) -> None:
    from store.models import StoredImage

    sha = "c" * 64
    for _ in range(2):
        repo.create_jobs([new_job(image_sha256=sha), new_job(image_sha256="d" * 64)],
                         {sha: b"png-bytes", "d" * 64: b"other"})  # fmt: skip
    with repo.engine.connect() as conn:
        rows = conn.execute(select(StoredImage.sha256, StoredImage.created_at)).all()
        latest = conn.scalar(select(func.max(Job.queued_at)).where(Job.image_sha256 == sha))
    assert sorted(sha for sha, _at in rows) == ["c" * 64, "d" * 64]
    touched = dict(rows)[sha]
    assert touched is not None and latest is not None
    assert touched.replace(tzinfo=None) == latest.replace(tzinfo=None)
    assert repo.image_bytes(sha) == b"png-bytes"
