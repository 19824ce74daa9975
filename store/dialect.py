"""What differs between the two databases we run on: the ON CONFLICT insert, storable text,
and commits that need not wait for the disk."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert


def insert_for(engine: Engine, table: Any) -> Any:
    """An INSERT into `table` that offers this engine's on_conflict_do_nothing/do_update."""
    builder = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    return builder(table)


def storable(text: str) -> str:
    """`text` as every database stores it: no NUL (PostgreSQL refuses it), valid UTF-8."""
    if "\x00" not in text and text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def no_wait_for_disk(conn: Connection) -> None:
    """PostgreSQL: this transaction's commit returns before its WAL is flushed (still atomic).

    Only for writes whose loss in a crash is harmless, such as the published mark (a lost
    one means a republish, which a worker's guarded start absorbs); SQLite: a no-op.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
