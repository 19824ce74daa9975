"""Bounded resources: stream and wait caps, stream lifetime, slow bodies, base64 memory."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
import tracemalloc
from contextlib import ExitStack
from pathlib import Path

import httpx

from jobs.settings import Settings
from producers.gateway.intake import _from_json
from store import migrate
from store.db import engine_for
from store.repository import Repository
from tests.producers.gateway.conftest import ThreadGateway, jpeg
from tests.support import eventually

IMAGE = base64.b64encode(jpeg(7)).decode()
# No worker runs here: with the embedded broker every job stays queued (a job to follow).
QUEUED = {"image_base64": IMAGE, "advisor": "weston"}


def local_settings(tmp_path: Path, **values: object) -> Settings:
    database = f"sqlite:///{tmp_path / 'advisor.db'}"
    migrate.upgrade(database)
    return Settings(
        data_dir=tmp_path / "data", database_url=database, registry=None,
        image_roots=[tmp_path], **values,  # type: ignore[arg-type]
    )  # fmt: skip


def test_streams_beyond_the_cap_are_503_and_a_closed_stream_frees_its_slot_at_once(
    tmp_path: Path,
) -> None:
    settings = local_settings(tmp_path, gateway_max_streams=2, gateway_max_waits=2)
    with ThreadGateway(settings) as gateway, ExitStack() as held:
        clients = [held.enter_context(httpx.Client(base_url=gateway.url, timeout=30))
                   for _ in range(3)]  # fmt: skip
        job_id = clients[0].post("/analyze", json=QUEUED).json()["job_id"]
        url = f"/jobs/{job_id}/events"
        first = held.enter_context(clients[0].stream("GET", url))
        closing = ExitStack()
        second = closing.enter_context(clients[1].stream("GET", url))
        assert (first.status_code, second.status_code) == (200, 200)
        refused = clients[2].get(url)
        assert refused.status_code == 503 and refused.json()["error"] == "too_busy"
        assert refused.headers["retry-after"]
        closing.close()
        # The closed stream stops polling and gives its slot back within a second.

        def opens() -> bool:
            with clients[2].stream("GET", url) as again:
                return again.status_code == 200

        eventually("the closed stream's slot to be given back", opens, 1.0, poll=0.05)


def test_a_stream_ends_with_an_expired_event_after_its_lifetime(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, gateway_max_stream_seconds=1)
    with ThreadGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as c:
        job_id = c.post("/analyze", json=QUEUED).json()["job_id"]
        started = time.monotonic()
        text = c.get(f"/jobs/{job_id}/events").text
    assert 1.0 <= time.monotonic() - started < 5
    assert "event: status" in text and text.rstrip().splitlines()[-2] == "event: expired"
    assert '"error":"stream_expired"' in text


def test_waits_beyond_the_cap_are_503_before_anything_is_stored(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, gateway_max_waits=1)
    with ThreadGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as c:
        waiting = threading.Thread(
            target=lambda: c.post("/analyze", params={"wait": 3}, json=QUEUED), daemon=True
        )
        waiting.start()
        time.sleep(0.8)
        other = {"image_base64": base64.b64encode(jpeg(8)).decode(), "advisor": "weston"}
        refused = c.post("/analyze", params={"wait": 3}, json=other)
        waiting.join(10)
    assert refused.status_code == 503 and refused.json()["error"] == "too_busy"
    assert "job_id" not in refused.json()
    assert len(Repository(engine_for(settings.resolved_database_url)).find()) == 1


def test_a_body_that_trickles_in_is_cut_off_with_408(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, gateway_body_timeout_seconds=1)
    with (
        ThreadGateway(settings) as gateway,
        socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock,
    ):
        sock.sendall(b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"image\"")  # fmt: skip
        started = time.monotonic()
        chunks = []
        while chunk := sock.recv(4096):  # headers and body may come in separate packets
            chunks.append(chunk)
        reply = b"".join(chunks).decode()
    assert time.monotonic() - started < 5
    assert reply.startswith("HTTP/1.1 408") and '"error":"body_timeout"' in reply


def test_base64_is_decoded_within_a_few_copies_of_the_body_whatever_its_spacing() -> None:
    data = os.urandom(750_000)
    flat = base64.b64encode(data).decode()
    spaced = " ".join(flat[i : i + 2] for i in range(0, len(flat), 2))
    for text in (flat, spaced):
        raw = json.dumps({"image_base64": text, "advisor": "ansel"}).encode()
        tracemalloc.start()
        item = _from_json(raw, Settings())
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # Splitting on whitespace used to build a list of chunks: 21x the body.
        assert peak < 4 * len(raw), (len(raw), peak)
        assert item.image == data


def test_a_wait_whose_client_leaves_stops_polling_within_a_second(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, gateway_max_waits=1)
    body = json.dumps(QUEUED).encode()
    with ThreadGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as c:
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        head = b"POST /analyze?wait=60 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(1.0)
        busy = c.post("/analyze", params={"wait": 1}, json=QUEUED)
        assert busy.status_code == 503 and busy.json()["error"] == "too_busy"
        sock.close()

        def free() -> bool:
            return c.post("/analyze", params={"wait": 0.1}, json=QUEUED).status_code != 503

        eventually("the abandoned wait's slot to be given back", free, 1.5, poll=0.05)
