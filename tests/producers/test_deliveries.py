"""Outcome notices, producer side: refusals at submit, the sweep's retries; cancel over HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs.contracts import Status
from jobs.settings import Settings
from producers import CallbackRefused, Client, InvalidSubmission, JobFinished
from producers.commands.sweep import sweeper
from producers.ops.sweep import SweepReport
from producers.services import Services
from tests.producers.conftest import make_settings, photo
from tests.producers.crafted_jobs import Crafter
from tests.producers.gateway.conftest import ThreadGateway
from tests.receivers import WEBHOOK_SECRET, WebhookReceiver
from tests.support import eventually


def webhook_settings(tmp_path: Path, db: str, registry: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_secret": WEBHOOK_SECRET,
        "webhook_allowed_hosts": ["127.0.0.1"],
        "webhook_timeout": 1.0,
        "delivery_backoff_seconds": 0.4,
        "delivery_max_attempts": 4,
        **extra,
    }
    return make_settings(tmp_path, db, registry, **values)


@contextmanager
def sweeping(services: Services, interval: float = 0.1) -> Iterator[list[SweepReport]]:
    """`advisor sweep --loop` in a thread."""
    stop, reports = threading.Event(), []
    thread = threading.Thread(
        target=sweeper(services).run_loop,
        kwargs={"interval": interval, "stop": stop, "on_round": reports.append},
        daemon=True,
    )
    thread.start()
    try:
        yield reports
    finally:
        stop.set()
        thread.join(timeout=30)


def finish(services: Services, job_id: str) -> None:
    """What a worker does: start and succeed the job."""
    crafter = Crafter(services.engine)
    crafter.succeed(job_id)


def test_notify_needs_a_task_and_a_queue_of_the_apps_own(
    tmp_path: Path, sqlite_db: str, registry_file: Path
) -> None:
    with Services(make_settings(tmp_path, sqlite_db, registry_file)) as services:
        client = Client(services=services)
        for kwargs, reason in (
            ({"notify": "app.done"}, "give both notify"),
            ({"notify_queue": "advisor.notify.app"}, "give both notify"),
            ({"notify": "app done", "notify_queue": "advisor.notify.app"}, "letters, digits"),
            ({"notify": "app.done", "notify_queue": "advisor.base"}, "advisor.notify.NAME"),
            ({"notify": "app.done", "notify_queue": "app.results"}, "advisor.notify.NAME"),
        ):
            with pytest.raises(InvalidSubmission, match=reason):
                client.submit(photo(1), "ansel", **kwargs)
        with pytest.raises(CallbackRefused, match="ADVISOR_WEBHOOK_SECRET"):
            client.submit(photo(1), "ansel", callback_url="https://hooks.example.com/x")
        assert services.repository.find() == []  # nothing written for a refused submit
        handle = client.submit(
            photo(2), "ansel", notify="app.done", notify_queue="advisor.notify.app"
        )
        [task] = client.deliveries_of(handle.id)
        assert (task.kind, task.target, task.queue, task.state) == (
            "task", "app.done", "advisor.notify.app", "pending",
        )  # fmt: skip


def test_unsafe_callbacks_are_refused_at_submit_with_a_clear_4xx(
    tmp_path: Path, sqlite_db: str, registry_file: Path, image_root: Path
) -> None:
    (image_root / "p.png").write_bytes(photo(3))
    cases = {
        # Any public host may be called: loopback, metadata and private answers are refused.
        ("*",): [
            ("http://127.0.0.1:9/hook", "non-public address (127.0.0.1)"),
            ("http://169.254.169.254/latest/meta-data/", "non-public address (169.254.169.254)"),
            ("http://localhost:9/hook", "resolves to a non-public address"),
        ],
        ("hooks.example.com",): [
            ("https://evil.example.com/hook", "not in ADVISOR_WEBHOOK_ALLOWED_HOSTS"),
            ("http://127.0.0.1:9/hook", "not in ADVISOR_WEBHOOK_ALLOWED_HOSTS"),
        ],
        (): [("https://hooks.example.com/hook", "Webhooks are off")],
    }
    for hosts, refusals in cases.items():
        settings = webhook_settings(tmp_path, sqlite_db, registry_file,
                                    webhook_allowed_hosts=list(hosts))  # fmt: skip
        with ThreadGateway(settings) as gateway, httpx.Client(base_url=gateway.url) as http:
            for url, reason in refusals:
                body = {"image": "p.png", "advisor": "ansel", "callback_url": url}
                answer = http.post("/analyze", json=body)
                assert answer.status_code == 422, (url, answer.text)
                assert answer.json()["error"] == "callback_refused"
                assert reason in answer.json()["message"], (url, answer.json())
    settings = webhook_settings(tmp_path, sqlite_db, registry_file)
    with ThreadGateway(settings) as gateway, httpx.Client(base_url=gateway.url) as http:
        ok = http.post(
            "/analyze",
            json={
                "image": "p.png",
                "advisor": "ansel",
                "callback_url": "http://127.0.0.1:9/hook?token=s3",
            },
        )
        assert ok.status_code == 202, ok.text
        [shown] = http.get(f"/jobs/{ok.json()['job_id']}").json()["deliveries"]
    assert (shown["kind"], shown["state"], shown["attempts"]) == ("webhook", "pending", 0)
    assert shown["target"] == "http://127.0.0.1:9/hook?..."  # the query may carry a secret
    with Services(settings) as services:
        assert len(services.repository.find()) == 1


def test_a_webhook_whose_receiver_is_down_is_retried_then_delivered_exactly_once(
    tmp_path: Path, sqlite_db: str, registry_file: Path
) -> None:
    receiver = WebhookReceiver()
    settings = webhook_settings(tmp_path, sqlite_db, registry_file)
    with Services(settings) as services, sweeping(services) as rounds:
        client = Client(services=services)
        handle = client.submit(photo(4), "ansel", callback_url=receiver.url)
        finish(services, handle.id)

        def failed_attempts() -> int:
            return len(client.deliveries_of(handle.id)[0].log)

        eventually("two failed attempts", lambda: failed_attempts() >= 2, 10)
        receiver.start()
        try:
            eventually(
                "delivery once the receiver is up",
                lambda: client.deliveries_of(handle.id)[0].state == "delivered",
                10,
            )
            settled = len(rounds)
            eventually("five more sweep rounds", lambda: len(rounds) >= settled + 5, 10)
        finally:
            receiver.stop()
        [delivery] = client.deliveries_of(handle.id)
    [got] = receiver.received  # exactly once, whatever the sweep did after
    assert got.is_signed and got.delivery_id == delivery.id
    assert got.body["job_id"] == handle.id and got.body["status"] == "succeeded"
    assert got.body["analysis"]["overall_score"] == 6.0
    log = delivery.log
    assert [a["ok"] for a in log] == [False] * (len(log) - 1) + [True]
    # The operator's detail names the refusal; the tenant's text does not name the address.
    assert all("Connection refused" in a["detail"] for a in log[:-1])
    assert all("refused" not in a["error"] and "127.0.0.1" not in a["error"] for a in log[:-1])
    times = [datetime.fromisoformat(a["at"]) for a in log]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    # Exponential backoff: 0.4 s, then 0.8 s, ... (each round of the sweep is 0.1 s apart).
    assert gaps[0] >= 0.4 and (len(gaps) < 2 or gaps[1] >= 0.8), gaps
    print(f"webhook, receiver down then up: sent=1 delivered=1 retried={len(log) - 1} "
          f"duplicated={len(receiver.received) - 1}")  # fmt: skip


def test_out_of_attempts_a_notice_is_undelivered_until_deliveries_retry(
    tmp_path: Path, sqlite_db: str, registry_file: Path
) -> None:
    receiver = WebhookReceiver()
    settings = webhook_settings(tmp_path, sqlite_db, registry_file, delivery_max_attempts=2,
                                delivery_backoff_seconds=0.1)  # fmt: skip
    with Services(settings) as services:
        client = Client(services=services)
        handle = client.submit(photo(5), "ansel", callback_url=receiver.url)
        client.cancel(handle.id)  # cancelled jobs are notified too
        with sweeping(services):
            eventually(
                "undelivered after two attempts",
                lambda: client.deliveries_of(handle.id)[0].state == "undelivered",
                10,
            )
        [gone] = client.deliveries_of(handle.id)
        assert len(gone.log) == 2 and "Connection refused" in (gone.last_error or "")
        receiver.start()
        try:
            assert client.retry_deliveries([handle.id]) == [gone.id]
            done = services.courier.deliver_due()
        finally:
            receiver.stop()
        assert done.delivered == [gone.id]
        [delivered] = client.deliveries_of(handle.id)
    assert delivered.state == "delivered" and len(delivered.log) == 3
    [got] = receiver.received
    assert got.body["status"] == "cancelled" and got.body["error"] == "Cancelled before it started"


def test_cancel_over_http_answers_by_what_the_job_was_doing(
    tmp_path: Path, sqlite_db: str, registry_file: Path
) -> None:
    settings = make_settings(tmp_path, sqlite_db, registry_file)
    crafter = Crafter(Services(settings).engine)
    queued, running, done = crafter.queue(3)
    crafter.start(running)
    crafter.succeed(done)
    with ThreadGateway(settings) as gateway, httpx.Client(base_url=gateway.url) as http:
        first = http.delete(f"/jobs/{queued}")
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "cancelled"
        second = http.delete(f"/jobs/{running}")
        assert second.status_code == 202, second.text
        assert second.json()["status"] == "running" and second.json()["cancel_requested_at"]
        for job_id, status in ((done, "succeeded"), (queued, "cancelled")):
            late = http.delete(f"/jobs/{job_id}")
            assert late.status_code == 409, late.text
            assert late.json()["error"] == "job_finished" and late.json()["job_status"] == status
            assert f"already {status}" in late.json()["message"]
        assert http.delete("/jobs/no-such-job").status_code == 404
    with Client(settings) as client:
        assert client.status(queued).started_at is None
        with pytest.raises(JobFinished):
            client.cancel(done)
        assert client.status(running).status == Status.RUNNING  # its worker records the cancel
