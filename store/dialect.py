"""What differs between the two databases we run on: the ON CONFLICT insert and storable text."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
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
