"""A real worker process consumes real messages: jobs succeed, bad input fails clearly."""

from __future__ import annotations

import hashlib
import io
import json
import statistics
import zlib
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import text

from advisor_worker.devtools.adapter_maker import write_random_adapter
from jobs.broker import analyze_queue, make_celery
from jobs.contracts import ANALYZE_TASK, Assignment, ErrorKind, Status
from jobs.settings import Settings
from producers import Client, SubmitItem
from store import migrate
from store.db import engine_for
from store.repository import Repository
from store.submissions import NewJob
from tests.support import Env, running_workers, wait_until_final


def photo(seed: int) -> bytes:
    buffer = io.BytesIO()
    img = Image.effect_mandelbrot((96, 64), (-2 + seed * 0.01, -1, 1, 1), 30).convert("RGB")
    img.save(buffer, format="JPEG")
    return buffer.getvalue()


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(buffer, format="GIF")
    return buffer.getvalue()


def png_bomb(side: int = 20000) -> bytes:
    """A valid PNG header claiming side x side pixels, with a tiny compressed body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))  # fmt: skip

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    body = zlib.compress(b"\x00" * (side + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def setup_env(tmp_path: Path, model_dir: Path, database_url: str, broker_url: str) -> Env:
    migrate.upgrade(database_url)
    adapter = write_random_adapter(model_dir, tmp_path / "adapters" / "ansel-v1", fmt="peft")
    registry = tmp_path / "adapters" / "registry.json"
    registry.write_text(json.dumps({"variants": {"fine_tuned": {"adapter": adapter.name}}}))
    (tmp_path / "images").mkdir()
    return Env(
        {
            "ADVISOR_DATA_DIR": str(tmp_path / "data"),
            "ADVISOR_DATABASE_URL": database_url,
            "ADVISOR_BROKER_URL": broker_url,
            "ADVISOR_BASE_MODEL": str(model_dir),
            "ADVISOR_REGISTRY": str(registry),
            "ADVISOR_IMAGE_ROOTS": str(tmp_path / "images"),
            "ADVISOR_TEXT_LIMIT": "16",
            "ADVISOR_MAX_OUTPUT_TOKENS": "1500",
            "ADVISOR_HEARTBEAT_INTERVAL": "1",
            "ADVISOR_WORKER_LIVE_WINDOW": "10",
        }
    )


def settings_of(env: Env) -> Settings:
    v = env.values
    return Settings(
        data_dir=Path(v["ADVISOR_DATA_DIR"]),
        database_url=v["ADVISOR_DATABASE_URL"],
        broker_url=v["ADVISOR_BROKER_URL"],
        base_model=v["ADVISOR_BASE_MODEL"],
        registry=Path(v["ADVISOR_REGISTRY"]),
        image_roots=[Path(v["ADVISOR_IMAGE_ROOTS"])],
        worker_live_window=10,
        heartbeat_interval=1,
    )


@pytest.fixture(params=["embedded", "redis"])
def env(request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path) -> Env:
    if request.param == "redis":
        broker = request.getfixturevalue("redis_url")
    else:
        broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    return setup_env(tmp_path, tiny_model_dir, f"sqlite:///{tmp_path / 'advisor.db'}", broker)


def test_jobs_on_two_variants_succeed_on_the_queue_their_row_names(
    env: Env, tmp_path: Path
) -> None:
    settings = settings_of(env)
    repo = Repository(engine_for(settings.resolved_database_url))
    with running_workers(env, ["base", "fine_tuned"], tmp_path) as workers:
        with Client(settings) as client:
            handles = client.submit_many(
                [
                    SubmitItem(photo(i), "ansel", variant="fine_tuned" if i % 2 else "base")
                    for i in range(6)
                ]  # fmt: skip
            )
        ids = [h.id for h in handles]
        wait_until_final(repo, ids, timeout=120)
        by_pid = {w.proc.pid: w.variant for w in workers}
    fingerprints = {hb.variant: hb.adapter_fingerprint for hb in repo.live_workers(3600)}
    for job_id in ids:
        job = repo.get(job_id)
        assert job.status == Status.SUCCEEDED, (job.error_kind, job.error)
        assert job.worker is not None and job.worker.startswith(f"{job.variant}-")
        assert by_pid[int(job.worker.split("-")[-1].split("@")[0])] == job.variant
        scores = [d["score"] for d in job.llm_outputs["dimensions"]]
        assert job.llm_outputs["overall_score"] == round(statistics.mean(scores), 2)
        if job.variant == "fine_tuned":
            assert job.adapter_fingerprint and len(job.adapter_fingerprint) == 64
        else:
            assert job.adapter_fingerprint is None
        assert job.prompt_tokens and job.output_tokens and job.inference_ms is not None
        # photo(i) is 96x64: whole 32-px patches already, so the model got it as it is.
        assert job.photo is not None and job.photo["format"] == "JPEG"
        assert (job.photo["width"], job.photo["height"]) == (96, 64)
        assert (job.model_image_width, job.model_image_height, job.image_tokens) == (96, 64, 6)
        assert job.prompt_version == "1+capture"
    assert fingerprints.get("fine_tuned") is None or len(fingerprints["fine_tuned"]) == 64
    with engine_for(settings.resolved_database_url).connect() as conn:
        rows = conn.execute(
            text("SELECT json_extract(llm_outputs, '$.overall_score'), llm_outputs FROM jobs")
        ).all()
    for overall, outputs in rows:
        scores = [d["score"] for d in json.loads(outputs)["dimensions"]]
        assert overall == pytest.approx(statistics.mean(scores), abs=0.006)


def test_bad_inputs_fail_their_jobs_clearly_and_the_worker_stays_up(
    env: Env, tmp_path: Path
) -> None:
    settings = settings_of(env)
    repo = Repository(engine_for(settings.resolved_database_url))
    outside = tmp_path / "secret.png"
    outside.write_bytes(photo(1))
    cases: dict[str, tuple[str, bytes | None, str]] = {
        "corrupt": ("ansel", b"\xff\xd8\xff not really a jpeg", ErrorKind.INVALID_IMAGE),
        "empty": ("ansel", b"", ErrorKind.INVALID_IMAGE),
        "bomb": ("ansel", png_bomb(), ErrorKind.INVALID_IMAGE),
        "gif": ("ansel", gif(), ErrorKind.UNSUPPORTED_FORMAT),
        "outside": ("ansel", None, ErrorKind.INVALID_IMAGE),
        "advisor": ("nobody", photo(2), ErrorKind.UNKNOWN_ADVISOR),
    }
    # Producers refuse these up front; here they reach the worker as hand-made rows and messages.
    app = make_celery(settings, "test-producer")
    ids: dict[str, str] = {}
    for name, (advisor, data, _kind) in cases.items():
        if data is None:
            ref, sha, images = f"path:{outside}", "0" * 64, {}
        else:
            sha = hashlib.sha256(data).hexdigest()
            ref, images = f"sha256:{sha}", {sha: data}
        new = NewJob(advisor, sha, ref, name, "base", Assignment.FORCED, 0)
        [(job, _)] = repo.create_jobs([new], images=images)
        ids[name] = job.id
        payload = {"job_id": job.id, "advisor": advisor, "variant": "base", "image_ref": ref}
        app.send_task(ANALYZE_TASK, kwargs=payload, queue=analyze_queue("base"))
    [(missing_fields, _)] = repo.create_jobs(
        [NewJob("ansel", "1" * 64, "sha256:" + "1" * 64, "m", "base", Assignment.FORCED, 0)]
    )
    app.send_task(ANALYZE_TASK, kwargs={"job_id": missing_fields.id}, queue=analyze_queue("base"))
    with running_workers(env, ["base"], tmp_path) as [worker]:
        wait_until_final(repo, [*ids.values(), missing_fields.id], timeout=90)
        with Client(settings) as client:
            good = client.submit(photo(3), "ansel")
        wait_until_final(repo, [good.id], timeout=60)
        assert worker.proc.poll() is None
    app.close()
    for name, (_advisor, _data, kind) in cases.items():
        job = repo.get(ids[name])
        assert (job.status, job.error_kind) == (Status.FAILED, kind), (name, job.error)
        assert job.error
    assert "outside the allowed roots" in repo.get(ids["outside"]).error
    assert "known advisors" in repo.get(ids["advisor"]).error
    assert "pixels" in repo.get(ids["bomb"]).error
    assert "GIF is not accepted; send one of: JPEG" in repo.get(ids["gif"]).error
    broken = repo.get(missing_fields.id)
    assert (broken.status, broken.error_kind) == (Status.FAILED, ErrorKind.INVALID_REQUEST)
    assert "advisor" in broken.error
    assert repo.get(good.id).status == Status.SUCCEEDED
