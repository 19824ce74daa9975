"""The one exception summary: one line, the driver's words, never the SQL."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from jobs.errors import UnknownAdvisor, summary


def driver_error() -> OperationalError:
    engine = create_engine("sqlite://")
    with pytest.raises(OperationalError) as caught, engine.connect() as conn:
        conn.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": "x"})
    return caught.value


def test_a_database_error_is_summarised_by_the_driver_without_sql_or_parameters() -> None:
    exc = driver_error()
    assert "[SQL:" in str(exc)
    assert summary(exc) == "no such table: jobs"
    assert summary(exc, typed=True) == "OperationalError: no such table: jobs"
    assert isinstance(exc.orig, sqlite3.OperationalError)


def test_every_line_of_a_message_joins_one_line_and_a_limit_cuts_it() -> None:
    exc = UnknownAdvisor("Unknown advisor 'x';\n\tknown:  ansel,\nweston")
    assert summary(exc) == "Unknown advisor 'x'; known: ansel, weston"
    assert summary(exc, limit=7) == "Unknown"
    assert summary(exc, typed=True, limit=7) == "UnknownAdvisor: Unknown"


def test_an_empty_message_is_named_by_its_type() -> None:
    assert summary(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert summary(ValueError("  \n ")) == "ValueError"
