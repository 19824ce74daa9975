"""Engines: one per URL per process, with SQLite tuned for several processes sharing a file."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout


@functools.cache
def engine_for(url: str) -> Engine:
    """A pooled engine for `url`; SQLite files get WAL and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=POSTGRES_TIMEOUTS
    )


# A partitioned network drops packets without resetting connections: without these a query
# or connect waits for TCP's own timeouts (minutes), past a worker's hard limit. With them a
# dead path fails within seconds, as a transient error the callers' retries wait out.
POSTGRES_TIMEOUTS = {
    "connect_timeout": 10,
    "tcp_user_timeout": 15_000,  # ms a sent query may go unacknowledged
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    # The server's side: a client cut off between UPDATE and COMMIT would hold its row locks
    # (and block the sweep's re-queue of its jobs) until the server noticed, hours later.
    # Every transaction here is a few statements sent at once; none idles on purpose.
    "options": "-c idle_in_transaction_session_timeout=15000",
}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Take over transaction control so BEGIN IMMEDIATE below is honoured.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Writers queue on the busy timeout instead of failing on lock upgrade.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_unmigrated(exc: SQLAlchemyError) -> bool:
    """The schema is missing or older than the code (a table or column it expects is absent)."""
    orig = getattr(exc, "orig", None)
    text = str(orig)
    return type(orig).__name__ in ("UndefinedTable", "UndefinedColumn") or (
        "no such table" in text or "no such column" in text
    )


def is_unreachable(exc: SQLAlchemyError) -> bool:
    """The server did not answer, dropped the connection, or the pool ran dry."""
    if isinstance(exc, PoolTimeout | InterfaceError):
        return True
    return (
        isinstance(exc, OperationalError | DBAPIError)
        and not is_unmigrated(exc)
        and (isinstance(exc, OperationalError) or exc.connection_invalidated)
    )
