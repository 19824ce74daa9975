"""Keys, quotas, idempotency, rollout writes and connection caps against the live gateway."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from producers.keys import KeyStore
from tests.faults.hostile.stack import (
    IDLE,
    MAX_STREAMS,
    MAX_WAITS,
    TOKEN,
    A,
    HostileStack,
    b64,
    photo,
    record,
)
from tests.support import eventually

pytestmark = pytest.mark.slow


def test_a_key_sees_only_its_own_jobs(files: HostileStack) -> None:
    with files.client(files.keys.app) as app, files.client(files.keys.other) as other:
        job_id = app.post(A, json={"advisor": "ansel", "image": "ok.jpg"}).json()["job_id"]
        assert app.get(f"/jobs/{job_id}").status_code == 200
        theirs = other.get(f"/jobs/{job_id}")
        stream = other.get(f"/jobs/{job_id}/events")
        rated = other.post(f"/jobs/{job_id}/feedback", json={"rating": 1})
        cancelled = other.delete(f"/jobs/{job_id}")
        anonymous = httpx.post(f"{files.url}/jobs/{job_id}/feedback", json={"rating": 1})
        still = app.get(f"/jobs/{job_id}").json()["status"]
    assert (theirs.status_code, theirs.json()["error"]) == (404, "job_not_found")
    assert stream.status_code == 404
    for answer in (rated, cancelled):
        assert (answer.status_code, answer.json()["error"]) == (404, "job_not_found"), answer.text
    assert anonymous.status_code == 401, anonymous.text
    assert still != "cancelled"
    record("another key's job", True)


def test_concurrent_submits_with_one_key_all_get_the_one_job(files: HostileStack) -> None:
    key = uuid.uuid4().hex
    payload = {"advisor": "ansel", "image_base64": b64(photo(21)), "idempotency_key": key}
    before = files.rows()

    def submit(_i: int) -> httpx.Response:
        with files.client(files.keys.app) as c:
            return c.post(A, json=payload)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, range(8)))
    assert {r.status_code for r in answers} == {202}, [
        r.text for r in answers if r.status_code != 202
    ]
    assert len({r.json()["job_id"] for r in answers}) == 1
    assert sum(r.json()["created"] for r in answers) == 1
    assert files.rows() - before == 1
    record("8 concurrent submits, one idempotency key", True)


@pytest.mark.parametrize(
    "change", [{"image_base64": b64(photo(23))}, {"advisor": "weston"}],
    ids=["other image", "other advisor"],
)  # fmt: skip
def test_an_idempotency_key_reused_for_another_request_is_409(
    files: HostileStack, change: dict[str, str]
) -> None:
    key = uuid.uuid4().hex
    first = {"advisor": "ansel", "image_base64": b64(photo(22)), "idempotency_key": key}
    with files.client(files.keys.app) as c:
        assert c.post(A, json=first).status_code == 202
        before = files.rows()
        again = c.post(A, json={**first, **change})
        same = c.post(A, json=first)
    assert (again.status_code, again.json()["error"]) == (409, "idempotency_key_reused")
    assert again.json()["idempotency_key"] == key
    assert same.status_code == 202 and same.json()["created"] is False
    assert files.rows() == before
    record(f"idempotency key reused: {next(iter(change))}", True)


def test_a_stale_or_racing_rollout_write_is_409_with_the_current_version(
    files: HostileStack,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with files.client() as c:
        version = next(r for r in c.get("/rollouts", headers=auth).json()
                       if r["advisor"] == "ansel")["version"]  # fmt: skip

        def put(ft: float) -> httpx.Response:
            with files.client() as own:
                return own.put("/rollouts/ansel", headers=auth, json={
                    "weights": {"base": 1 - ft, "fine_tuned": ft}, "reason": f"to {ft}",
                    "expected_version": version})  # fmt: skip

        with ThreadPoolExecutor(2) as pool:
            answers = sorted(r.status_code for r in pool.map(put, [0.0, 0.2]))
        stale = put(0.5)
        c.post("/rollouts/ansel/rollback", headers=auth, json={"reason": "tidy up"})
    assert answers == [200, 409]
    assert (stale.status_code, stale.json()["current_version"]) == (409, version + 1)
    record("two concurrent rollout writers", True)
    record("a stale expected_version", True)


def test_a_key_over_its_rate_is_429_with_retry_after(files: HostileStack) -> None:
    with files.client(files.keys.slow) as c:
        answers = [c.post(A, json={"advisor": "ansel", "image": "ok.jpg"}) for _ in range(3)]
    assert [r.status_code for r in answers] == [202, 202, 429]
    assert answers[2].json()["error"] == "rate_limited"
    assert 1 <= int(answers[2].headers["retry-after"]) <= 30
    record("rate limit", True)


def test_a_key_with_a_job_in_flight_up_to_its_quota_is_429(files: HostileStack) -> None:
    files.idle_job(submitted_by="single")
    before = files.rows()
    with files.client(files.keys.single) as c:
        refused = c.post(A, json={"advisor": "ansel", "image": "ok.jpg"})
    assert (refused.status_code, refused.json()["error"]) == (429, "too_many_in_flight")
    assert refused.headers["retry-after"] and refused.json()["limit"] == 1
    assert files.rows() == before
    record("in-flight quota", True)


def test_a_revoked_key_is_refused_within_seconds(files: HostileStack) -> None:
    store = KeyStore(files.repo.engine)
    _info, key = store.create(f"short-{uuid.uuid4().hex[:6]}")
    with files.client(key) as c:

        def answer() -> int:
            return c.get(f"/jobs/{uuid.uuid4()}").status_code

        eventually("the new key to work", lambda: answer() == 404, 5)
        store.revoke(_info.name)
        eventually("the revoked key to be refused", lambda: answer() == 401, 3)
    record("revocation", True)


def test_event_streams_and_waits_beyond_their_caps_are_503(files: HostileStack) -> None:
    job_id = files.idle_job(submitted_by="app")
    with files.client(files.keys.app) as c:
        streams = [c.stream("GET", f"/jobs/{job_id}/events") for _ in range(MAX_STREAMS)]
        opened = [s.__enter__() for s in streams]
        assert {r.status_code for r in opened} == {200}
        flood = c.get(f"/jobs/{job_id}/events")
        for s in streams:
            s.__exit__(None, None, None)
    assert (flood.status_code, flood.json()["error"]) == (503, "too_busy")
    operator = {"Authorization": f"Bearer {TOKEN}"}
    idle = {"advisor": "ansel", "image": "ok.jpg", "variant": IDLE}
    results: list[int] = []

    def wait() -> None:
        with files.client() as own:
            results.append(own.post(A + "?wait=4", json=idle, headers=operator).status_code)

    waiting = [threading.Thread(target=wait) for _ in range(MAX_WAITS)]
    for t in waiting:
        t.start()
    time.sleep(1.5)
    before = files.rows()
    with files.client() as c:
        refused = c.post(A + "?wait=4", json=idle, headers=operator)
    for t in waiting:
        t.join(30)
    assert (refused.status_code, refused.json()["error"]) == (503, "too_busy")
    assert files.rows() == before and results == [202] * MAX_WAITS
    record("event stream flood", True)
    record("?wait flood", True)


def _raw_http(stack: HostileStack, request: bytes, wait: float = 0) -> str:
    port = int(stack.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        time.sleep(wait)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply.decode(errors="replace")


def test_slow_and_lying_bodies_are_refused(files: HostileStack) -> None:
    auth = f"Authorization: Bearer {files.keys.app}\r\n".encode()
    head = b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth
    started = time.monotonic()
    slow = _raw_http(files, head + b'Content-Length: 500\r\n\r\n{"advisor"')
    assert time.monotonic() - started < 10
    assert slow.startswith("HTTP/1.1 408") and "body_timeout" in slow
    lying = _raw_http(files, head + b"Content-Length: 12abc\r\n\r\n{}")
    assert lying.startswith("HTTP/1.1 400"), lying
    files.assert_alive()
    record("a body that trickles in", True)
    record("a Content-Length that is no number", True)
