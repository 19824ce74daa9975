"""Shared pieces of the operator commands (report, guard, capacity): argument types, error lines."""

from __future__ import annotations

import argparse

from sqlalchemy.exc import SQLAlchemyError


def positive(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    value = positive(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def one_line(exc: BaseException) -> str:
    """A one-line reason for stderr; database errors point at the usual fix."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {first} (is ADVISOR_DATABASE_URL right and migrated?)"
    return first
