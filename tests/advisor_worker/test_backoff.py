"""Database calls that wait out an outage: retried with backoff, bounded, transient errors only."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from advisor_worker.backoff import call_with_backoff
from advisor_worker.errors import DatabaseUnavailable


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "outage.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    return path


def impatient_engine(path: Path) -> Engine:
    # A 50 ms busy timeout: a held write lock surfaces as "database is locked" at once.
    return create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})


def hold_write_lock(path: Path, seconds: float) -> threading.Thread:
    ready = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        ready.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    ready.wait(5)
    return thread


def insert(engine: Engine, row_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t (id) VALUES (:id)"), {"id": row_id})


def test_a_write_waits_for_the_database_and_logs_each_retry(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = impatient_engine(db)
    holder = hold_write_lock(db, 1.0)
    with caplog.at_level(logging.WARNING, logger="advisor_worker.backoff"):
        call_with_backoff(lambda: insert(engine, 1), what="Writing", deadline=time.monotonic() + 20)
    holder.join()
    retries = [r.getMessage() for r in caplog.records]
    assert len(retries) >= 2
    assert retries[0].startswith("Writing failed (OperationalError: database is locked")
    assert "retry 1 in 0.25s" in retries[0] and "retry 2 in 0.50s" in retries[1]
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM t")) == 1
    engine.dispose()


def test_past_the_deadline_the_outage_is_reported_chained_to_its_cause(db: Path) -> None:
    engine = impatient_engine(db)
    holder = hold_write_lock(db, 2.0)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="Writing: the database stayed unreachable"
                       ) as caught:  # fmt: skip
        call_with_backoff(lambda: insert(engine, 1), what="Writing", deadline=started + 0.6)
    assert time.monotonic() - started < 1.5
    assert isinstance(caught.value.__cause__, OperationalError)
    holder.join()
    engine.dispose()


def test_an_error_that_is_not_an_outage_is_raised_at_once(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = impatient_engine(db)
    insert(engine, 1)
    with (
        caplog.at_level(logging.WARNING, logger="advisor_worker.backoff"),
        pytest.raises(IntegrityError),
    ):
        call_with_backoff(lambda: insert(engine, 1), what="Writing", deadline=time.monotonic() + 20)
    assert caplog.records == []
    engine.dispose()
