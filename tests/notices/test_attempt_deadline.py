"""A webhook attempt has one deadline for the whole attempt, however slowly a receiver drips."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from notices.webhooks import CallbackPolicy, WebhookSender

TIMEOUT = 2.0
# Scheduling slack on a busy 2-core machine; the attempt used to take 22 s here.
SLACK = 1.0


class DripReceiver:
    """Accepts connections and answers one byte every `interval` seconds, forever."""

    def __init__(self, interval: float, phase: str) -> None:
        self.interval, self.phase = interval, phase
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            if self.phase == "headers":
                conn.recv(65536)
                answer = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 10_000
            else:  # never reads the request: the sender's send blocks once buffers fill
                answer = b""
            try:
                for byte in answer or iter(lambda: b"", None):
                    if self.stopped.wait(self.interval):
                        return
                    conn.sendall(bytes([byte]) if isinstance(byte, int) else byte)
            except OSError:
                return

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.fixture(params=[("headers", 0.6), ("headers", 1.0), ("headers", 0.05)],
                ids=["a byte every 0.6 s", "a byte a second", "a byte every 50 ms"])  # fmt: skip
def drip(request: pytest.FixtureRequest) -> Iterator[DripReceiver]:
    receiver = DripReceiver(request.param[1], request.param[0])
    yield receiver
    receiver.close()


def test_a_dripping_receiver_holds_an_attempt_no_longer_than_the_time_out(
    drip: DripReceiver,
) -> None:
    sender = WebhookSender(CallbackPolicy(("127.0.0.1",)), b"s", timeout=TIMEOUT)
    started = time.monotonic()
    result = sender.post(f"http://127.0.0.1:{drip.port}/hook", b"{}", "d-1")
    elapsed = time.monotonic() - started
    print(f"dripping receiver: attempt took {elapsed:.2f}s with timeout {TIMEOUT}s")
    assert not result.ok and not result.permanent
    assert f"within {TIMEOUT:g}s" in (result.error or "")
    assert elapsed < TIMEOUT + SLACK


def test_a_receiver_that_never_reads_a_large_body_is_cut_at_the_deadline() -> None:
    receiver = DripReceiver(0.6, "never-read")
    try:
        sender = WebhookSender(CallbackPolicy(("127.0.0.1",)), b"s", timeout=TIMEOUT)
        started = time.monotonic()
        result = sender.post(f"http://127.0.0.1:{receiver.port}/", b"x" * 50_000_000, "d-2")
        elapsed = time.monotonic() - started
    finally:
        receiver.close()
    assert not result.ok
    assert elapsed < TIMEOUT + SLACK
