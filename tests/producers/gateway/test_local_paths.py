"""The seed's request on the embedded default: a loopback gateway reads paths beside it.

A gateway bound to loopback with no ADVISOR_IMAGE_ROOTS and no API key reads image paths
relative to its working directory, once, at submit; the photo is stored like an upload, so
workers need neither the gateway's roots nor its files. Reachable from elsewhere, or once a
key exists, paths stay off until roots are set.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from jobs.contracts import STORED_PREFIX
from producers.gateway import create_app
from producers.keys import KeyStore
from store.db import engine_for
from tests.conftest import free_port
from tests.photo_files import card, encode, exif, private_leftovers
from tests.producers.conftest import make_settings
from tests.producers.gateway.conftest import Stack, follow, jpeg, wait_for_http

PATHS_OFF = "Image paths are disabled"


@contextmanager
def gateway_in(stack: Stack, cwd: Path, host: str) -> Iterator[httpx.Client]:
    """`advisor-gateway --host HOST` on the stack's database and broker, started in `cwd`,
    with no ADVISOR_IMAGE_ROOTS; the stack's workers (other roots) serve its jobs."""
    env = {k: v for k, v in stack.env.full().items() if k != "ADVISOR_IMAGE_ROOTS"}
    port = free_port()
    log = cwd / "gateway.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "advisor-gateway"), "--host", host,
             "--port", str(port)],
            env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/openapi.json", 30, proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            yield http
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-3000:]


def test_the_seeds_curl_beside_the_photo_succeeds_on_a_loopback_gateway_without_roots(
    stack: Stack, tmp_path: Path
) -> None:
    located = encode(card(), "JPEG", exif=exif(1, gps=True))
    (tmp_path / "test.jpg").write_bytes(located)
    with gateway_in(stack, tmp_path, "127.0.0.1") as http:
        response = http.post("/analyze", json={"image": "test.jpg", "advisor": "ansel"})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        # Read once at submit: the workers never look for the file.
        (tmp_path / "test.jpg").unlink()
        job = follow(http, job_id)
    assert job["status"] == "succeeded", job
    row = stack.repo.get(job_id)
    assert row.image_ref.startswith(STORED_PREFIX)
    stored = stack.repo.image_bytes(row.image_sha256)
    assert stored is not None and stored != located and private_leftovers(stored) == []


def test_a_gateway_reachable_from_elsewhere_keeps_paths_off_without_roots(
    stack: Stack, tmp_path: Path
) -> None:
    (tmp_path / "test.jpg").write_bytes(jpeg(3))
    with gateway_in(stack, tmp_path, "0.0.0.0") as http:
        response = http.post("/analyze", json={"image": "test.jpg", "advisor": "ansel"})
        inline = http.post("/analyze", files={"file": ("a.jpg", jpeg(3), "image/jpeg")},
                           data={"advisor": "ansel"})  # fmt: skip
    assert response.status_code == 400 and PATHS_OFF in response.json()["message"]
    assert inline.status_code == 202, inline.text


def test_once_a_key_exists_a_loopback_gateway_refuses_paths_without_roots(
    tmp_path: Path, sqlite_db: str, registry_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "test.jpg").write_bytes(jpeg(4))
    settings = make_settings(
        tmp_path, sqlite_db, registry_file, image_roots=[], gateway_keys_refresh_seconds=0.01
    )
    monkeypatch.chdir(tmp_path)
    app = create_app(settings, host="127.0.0.1")
    body = {"image": "test.jpg", "advisor": "ansel"}
    with TestClient(app) as http:
        opened = http.post("/analyze", json=body)
        assert opened.status_code == 202, opened.text
        _info, key = KeyStore(engine_for(sqlite_db)).create("app")
        keyed = http.post("/analyze", json=body, headers={"Authorization": f"Bearer {key}"})
    assert keyed.status_code == 400 and PATHS_OFF in keyed.json()["message"]
    assert "ADVISOR_IMAGE_ROOTS" in keyed.json()["message"]
