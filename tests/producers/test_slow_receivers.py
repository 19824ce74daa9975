"""A slow receiver holds its own notices only: others' arrive on time, and recovery never waits."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import update

from jobs.clock import utcnow
from notices.courier import DeliveryRound
from producers import Client, Services
from producers.commands.sweep import sweeper
from store.models import Job
from tests.producers.conftest import photo
from tests.producers.crafted_jobs import Crafter
from tests.producers.test_deliveries import webhook_settings
from tests.receivers import DripReceiver, WebhookReceiver
from tests.support import eventually

TIMEOUT = 1.0  # ADVISOR_WEBHOOK_TIMEOUT in webhook_settings


def finished_with_callback(client: Client, services: Services, url: str, seed: int) -> str:
    handle = client.submit(photo(seed), "ansel", callback_url=url)
    Crafter(services.engine).succeed(handle.id)
    return handle.id


def test_one_slow_receiver_does_not_delay_another_receivers_notices(
    tmp_path: Path, sqlite_db: str, registry_file: Path
) -> None:
    slow, fast = DripReceiver(0.6, "headers"), WebhookReceiver().start()
    settings = webhook_settings(tmp_path, sqlite_db, registry_file)
    try:
        with Services(settings) as services, Client(services=services) as client:
            for seed in range(3):
                finished_with_callback(client, services, f"http://127.0.0.1:{slow.port}/hook", seed)
            fast_ids = [
                finished_with_callback(client, services, fast.url, 10 + s) for s in range(3)
            ]
            rounds: list[DeliveryRound] = []
            started = time.monotonic()
            sending = threading.Thread(
                target=lambda: rounds.append(services.courier.deliver_due(by="test"))
            )
            sending.start()
            eventually(
                "the fast receiver's notices", lambda: len(fast.received) == 3, 30, poll=0.02
            )
            fast_s = time.monotonic() - started
            slow_still_sending = sending.is_alive()
            sending.join(30)
            round_s = time.monotonic() - started
            [done] = rounds
    finally:
        slow.close()
        fast.stop()
    print(f"slow receiver: round {round_s:.2f}s (3 attempts at {TIMEOUT}s each), "
          f"fast receiver's 3 notices in {fast_s:.2f}s")  # fmt: skip
    assert sorted(fast.by_job()) == sorted(fast_ids)
    assert len(done.delivered) == 3 and len(done.retrying) == 3
    assert slow_still_sending  # the fast one's notices did not wait behind the slow one's
    # Each attempt is cut at its deadline: without it one attempt drips for ~20 s.
    assert round_s < 3 * TIMEOUT + 10


def test_the_sweep_recovers_a_dead_workers_job_while_a_slow_receiver_drips(
    tmp_path: Path, sqlite_db: str, registry_file: Path
) -> None:
    slow = DripReceiver(0.6, "headers")
    settings = webhook_settings(tmp_path, sqlite_db, registry_file)
    try:
        with Services(settings) as services, Client(services=services) as client:
            for seed in range(5):
                finished_with_callback(client, services, f"http://127.0.0.1:{slow.port}/hook", seed)
            sweep = sweeper(services)
            first_started = time.monotonic()
            sweep.sweep()  # starts sending the 5 slow notices (about 5 s)
            first_s = time.monotonic() - first_started
            sending_after_first = (
                sweep._notices._thread is not None and sweep._notices._thread.is_alive()
            )
            dead = client.submit(photo(20), "ansel")
            Crafter(services.engine).start(dead.id)
            with services.engine.begin() as conn:  # its worker died: the lease lapsed
                conn.execute(update(Job).where(Job.id == dead.id)
                             .values(lease_until=utcnow()))  # fmt: skip
            started = time.monotonic()
            report = sweep.sweep()
            recovery_s = time.monotonic() - started
            sending_after_recovery = sweep._notices._thread.is_alive()
            eventually("the slow round", lambda: not sweep._notices._thread.is_alive(), 15)
    finally:
        slow.close()
    print(f"sweep with a slow receiver: first round {first_s:.2f}s, "
          f"recovery of a dead worker's job {recovery_s:.2f}s")  # fmt: skip
    assert report.requeued == [dead.id]
    # Both sweeps returned while the slow notices were still being sent: neither waited on them.
    assert sending_after_first and sending_after_recovery


def test_a_stopped_sweep_loop_returns_only_once_its_last_notice_round_has_ended(
    tmp_path: Path, sqlite_db: str, registry_file: Path
) -> None:
    # Else its thread keeps using the database after the loop's owner has closed it.
    slow = DripReceiver(0.6, "headers")
    settings = webhook_settings(tmp_path, sqlite_db, registry_file)
    try:
        with Services(settings) as services, Client(services=services) as client:
            for seed in range(2):
                finished_with_callback(client, services, f"http://127.0.0.1:{slow.port}/hook", seed)
            sweep = sweeper(services)
            stop = threading.Event()
            rounds = sweep.run_loop(interval=0.1, stop=stop, on_round=lambda _report: stop.set())
            sending = sweep._notices._thread
            done, error = sweep._notices.last
    finally:
        slow.close()
    assert rounds == 1
    assert sending is not None and not sending.is_alive()
    assert error is None and len(done.delivered) + len(done.retrying) == 2
