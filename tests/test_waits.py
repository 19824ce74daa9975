"""`eventually`, the suite's one wait: what it returns, what it waits out, how it fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.waits import eventually


def refused() -> None:
    raise ConnectionError("refused")


def died() -> None:
    raise AssertionError("the process died")


def test_it_returns_the_first_truthy_value_the_check_gives() -> None:
    values = iter([None, [], 0, ["job"], ["later"]])
    assert eventually("a job", lambda: next(values), 5, poll=0) == ["job"]


def test_it_tries_at_least_once_even_with_no_time_left() -> None:
    assert eventually("anything", lambda: "here", 0) == "here"


def test_listed_exceptions_are_waited_out_and_others_end_the_wait_at_once() -> None:
    answers: Iterator[Callable[[], str | None]] = iter([refused, refused, lambda: "up"])
    assert eventually("a server", lambda: next(answers)(), 5, poll=0, errors=(ConnectionError,))
    with pytest.raises(ConnectionError):
        eventually("a server", refused, 5, errors=(TimeoutError,))
    with pytest.raises(AssertionError, match="^the process died$"):
        eventually("a process", died, 5)


def test_the_failure_names_the_wait_its_timeout_the_last_value_seen_and_the_context() -> None:
    with pytest.raises(AssertionError) as failed:
        eventually("a state", lambda: [], 0.05, poll=0.01, context=lambda: "log tail")
    assert str(failed.value) == "waited 0.05 s for a state; last seen: []:\nlog tail"
    with pytest.raises(AssertionError, match=r"^waited 0 s for a server; last seen: Conn"):
        eventually("a server", refused, 0, errors=(ConnectionError,))
    with pytest.raises(AssertionError, match="^waited 0 s for a flag$"):
        eventually("a flag", lambda: False, 0)
