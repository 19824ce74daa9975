"""What differs between the two databases we run on: the ON CONFLICT insert, bulk inserts and
upserts, storable text, and commits that need not wait for the disk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, insert, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError


def insert_for(engine: Engine, table: Any) -> Any:
    """An INSERT into `table` that offers this engine's on_conflict_do_nothing/do_update."""
    builder = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    return builder(table)


def insert_new(conn: Connection, table: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT into `table` (a Table) rows that cannot conflict (fresh ids, no client key), each
    with the same keys.

    PostgreSQL takes them by one COPY, with no statement per row: for 200 job rows about half
    the time of psycopg's pipelined executemany (docs/benchmarks.md). SQLite: executemany.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), rows)
        return
    _copy(conn, table, rows, table.name)


def insert_or_touch(
    conn: Connection, table: Any, rows: Sequence[Mapping[str, Any]], key: str, touch: list[str]
) -> None:
    """INSERT rows (each with the same keys) into `table`; where a row with the same `key`
    exists, set its `touch` columns to the new row's values instead (an upsert).

    PostgreSQL: one COPY into a temporary table, then one INSERT ... SELECT ... ON CONFLICT,
    not a statement per row; SQLite: an executemany of the same upsert.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        upsert = insert_for(conn.engine, table)
        set_ = {name: upsert.excluded[name] for name in touch}
        conn.execute(upsert.on_conflict_do_update(index_elements=[key], set_=set_), rows)
        return
    quote = conn.dialect.identifier_preparer.quote
    target, staging = quote(table.name), quote(f"{table.name}_incoming")
    # Created in this transaction if absent (a rolled-back one takes it along); emptied at
    # commit, and only when this transaction used it.
    conn.execute(
        text(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {target}) ON COMMIT DELETE ROWS")
    )
    _copy(conn, table, rows, f"{table.name}_incoming")
    names = ", ".join(quote(name) for name in rows[0])
    updates = ", ".join(f"{quote(name)} = EXCLUDED.{quote(name)}" for name in touch)
    conn.execute(
        text(
            f"INSERT INTO {target} ({names}) SELECT {names} FROM {staging} "
            f"ON CONFLICT ({quote(key)}) DO UPDATE SET {updates}"
        )
    )


def _copy(conn: Connection, table: Any, rows: Sequence[Mapping[str, Any]], into: str) -> None:
    """COPY `rows`, converted as an INSERT into `table` converts them, into the table `into`."""
    dialect = conn.dialect
    names = list(rows[0])
    if skipped := [c.name for c in table.columns if c.default is not None and c.name not in names]:
        raise ValueError(f"COPY applies no Python-side default: give {skipped} in each row")
    # The values the driver gets from an INSERT (JSON serialized as SQLAlchemy does it).
    binds = [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]
    quote = dialect.identifier_preparer.quote
    statement = f"COPY {quote(into)} ({', '.join(map(quote, names))}) FROM STDIN"
    driver = conn.connection.driver_connection
    pairs = list(zip(names, binds, strict=True))
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row([row[n] if bind is None else bind(row[n]) for n, bind in pairs])
    except dialect.loaded_dbapi.Error as exc:
        # Callers handle SQLAlchemy's errors (unreachable, unmigrated); the driver's are mapped
        # as an execute() would map them.
        raise DBAPIError.instance(statement, None, exc, dialect.loaded_dbapi.Error) from exc


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
