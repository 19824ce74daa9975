"""`advisor metrics serve`: a real exporter process scraped over HTTP, against Redis and SQLite."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from jobs.settings import Settings
from producers import Client, SubmitItem
from store.db import engine_for
from tests.conftest import free_port
from tests.producers.conftest import make_settings, photo, settings_env
from tests.producers.crafted_jobs import Crafter
from tests.producers.ops.test_metrics import at, samples
from tests.support import eventually


@contextmanager
def exporter(settings: Settings, log: Path) -> Iterator[str]:
    port = free_port()
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", "metrics", "serve", f"--port={port}"],
            env=settings_env(settings),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def serving() -> bool:
        if "Serving Prometheus metrics" in log.read_text():
            return True
        assert proc.poll() is None, log.read_text()
        return False

    try:
        eventually("the exporter to serve", serving, 60, context=log.read_text)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def submit(settings: Settings, n: int, seed: int) -> None:
    with Client(settings) as client:
        client.submit_many([SubmitItem(photo(seed + i), "ansel", variant="base") for i in range(n)])


def test_the_exporter_serves_queue_depths_jobs_and_inference_time_read_at_each_scrape(
    sqlite_db: str, redis_url: str, registry_file: Path, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, sqlite_db, registry_file, redis_url)
    crafter = Crafter(engine_for(sqlite_db))
    fast, slow = crafter.queue(2, variant="fine_tuned")
    crafter.succeed(fast, inference_ms=800)
    crafter.succeed(slow, inference_ms=40_000)
    submit(settings, 3, seed=0)
    with exporter(settings, tmp_path / "exporter.log") as url:
        first = httpx.get(f"{url}/metrics", timeout=30)
        submit(settings, 2, seed=10)
        second = httpx.get(f"{url}/metrics", timeout=30)
        missing = httpx.get(f"{url}/nothing", timeout=30)

    assert first.status_code == 200, first.text
    assert first.headers["content-type"].startswith("text/plain; version=")
    found = samples(first.text)
    assert at(found, "advisor_queue_depth", queue="advisor.base") == 3
    assert at(found, "advisor_queue_depth", queue="advisor.fine_tuned") == 0
    assert at(found, "advisor_jobs", variant="base", status="queued") == 3
    assert at(found, "advisor_jobs", variant="fine_tuned", status="succeeded") == 2
    hist = {"variant": "fine_tuned"}
    assert at(found, "advisor_inference_seconds_count", **hist) == 2
    assert at(found, "advisor_inference_seconds_bucket", le="1.0", **hist) == 1
    assert at(found, "advisor_inference_seconds_bucket", le="45.0", **hist) == 2
    assert at(found, "advisor_inference_seconds_sum", **hist) == 40.8
    # Nothing is cached between scrapes.
    again = samples(second.text)
    assert at(again, "advisor_queue_depth", queue="advisor.base") == 5
    assert at(again, "advisor_jobs", variant="base", status="queued") == 5
    assert missing.status_code == 404


def test_the_exporter_leaves_queue_depths_out_while_the_broker_is_down(
    sqlite_db: str, registry_file: Path, tmp_path: Path
) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(tmp_path, sqlite_db, registry_file, dead_broker)
    Crafter(engine_for(sqlite_db)).queue(1, variant="base")
    with exporter(settings, tmp_path / "exporter.log") as url:
        response = httpx.get(f"{url}/metrics", timeout=60)
    assert response.status_code == 200, response.text
    found = samples(response.text)
    assert not [key for key in found if key[0] == "advisor_queue_depth"]
    assert at(found, "advisor_jobs", variant="base", status="queued") == 1
