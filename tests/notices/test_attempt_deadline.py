"""A webhook attempt has one deadline for the whole attempt, however slowly a receiver drips."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from notices.webhooks import CallbackPolicy, WebhookSender
from tests.receivers import DripReceiver

TIMEOUT = 2.0
# Scheduling slack on a busy 2-core machine; the attempt used to take 22 s here.
SLACK = 1.0


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
