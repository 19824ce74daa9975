"""One decode path: a seeded job gives the same text at B=1 and at B=4, whichever worker runs it."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from jobs.contracts import Status
from producers import Client, SubmitItem
from store.db import engine_for
from store.repository import Repository
from tests.advisor_worker.test_worker_e2e import settings_of, setup_env
from tests.support import Env, most_at_once, start_worker, wait_until_final

# Different sizes: the B=4 worker prefills rows of different image-token counts together.
SIZES = [(96, 64), (64, 128), (160, 96), (128, 128)]


def photo(seed: int, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    image = Image.effect_mandelbrot(size, (-2 + seed * 0.05, -1, 1, 1), 30).convert("RGB")
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def copy_of(env: Env, tmp_path: Path, files: dict[str, Path], batch: int) -> Env:
    """The same database and broker (queued messages included), copied for a second worker."""
    twin = tmp_path / f"b{batch}"
    twin.mkdir()
    values = dict(env.values)
    for key, source in files.items():
        # SQLite's backup API: a plain file copy could miss pages still in the WAL.
        with sqlite3.connect(source) as src, sqlite3.connect(twin / source.name) as dst:
            src.backup(dst)
        values[key] = values[key].replace(str(source), str(twin / source.name))
    values["ADVISOR_DATA_DIR"] = str(twin / "data")
    values["ADVISOR_WORKER_BATCH"] = str(batch)
    return Env(values)


@pytest.mark.parametrize("temperature", ["0.0", "0.2"])
def test_the_same_jobs_give_the_same_texts_on_a_b1_and_a_b4_worker(
    tmp_path: Path, tiny_model_dir: Path, temperature: str
) -> None:
    database, broker = tmp_path / "advisor.db", tmp_path / "broker.db"
    env = setup_env(tmp_path, tiny_model_dir, f"sqlite:///{database}", f"sqla+sqlite:///{broker}")
    env.values["ADVISOR_TEMPERATURE"] = temperature
    with Client(settings_of(env)) as client:
        handles = client.submit_many(
            [SubmitItem(photo(i, size), "ansel", subject=f"s{i}") for i, size in enumerate(SIZES)]
        )
    ids = [h.id for h in handles]
    # Both workers get the very same rows and messages (same job ids, so the same seeds).
    files = {"ADVISOR_DATABASE_URL": database, "ADVISOR_BROKER_URL": broker}
    envs = {batch: copy_of(env, tmp_path, files, batch) for batch in (1, 4)}

    texts: dict[int, list[str]] = {}
    for batch, twin in envs.items():
        worker = start_worker(twin, "base", tmp_path)
        try:
            repo = Repository(engine_for(twin.values["ADVISOR_DATABASE_URL"]))
            wait_until_final(repo, ids, timeout=180)
        finally:
            worker.terminate()
        jobs = [repo.get(job_id) for job_id in ids]
        assert [j.status for j in jobs] == [Status.SUCCEEDED] * len(ids), [j.error for j in jobs]
        assert len({j.image_tokens for j in jobs}) == len(SIZES)
        texts[batch] = [str(j.raw_output) for j in jobs]
        if batch == 4:  # the B=4 worker did generate several at once
            assert most_at_once(jobs) >= 3

    same = [a == b for a, b in zip(texts[1], texts[4], strict=True)]
    assert same == [True] * len(ids), (texts[1], texts[4])
    assert len(set(texts[1])) == len(ids)
