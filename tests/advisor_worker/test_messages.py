"""The message checks: what a broken message is refused for, and that nothing escapes them."""

from __future__ import annotations

import pytest
from celery.exceptions import InvalidTaskError
from kombu.exceptions import DecodeError

from advisor_worker.messages import body_problem, readable_job_id, refusing_failures

GOOD_HEADERS = {"id": "t-1", "task": "advisor.analyze"}


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({"task": "advisor.analyze"}, [[], {}, {}], "no task id"),
        ({**GOOD_HEADERS, "timelimit": "nope"}, [[], {}, {}], "timelimit header is 'nope'"),
        ({**GOOD_HEADERS, "timelimit": [1, "2"]}, [[], {}, {}], "not [soft, hard]"),
        ({**GOOD_HEADERS, "eta": "2099-01-01T00:00:00"}, [[], {}, {}], "never scheduled"),
        ({**GOOD_HEADERS, "expires": 5}, [[], {}, {}], "never scheduled"),
        (GOOD_HEADERS, {"job_id": "x"}, "body is a dict"),
        (GOOD_HEADERS, [[], [], {}], "list args and list kwargs"),
        (GOOD_HEADERS, [[], {}, 5], "embed is a int"),
    ],
)
def test_a_message_celery_cannot_use_is_refused_with_the_reason(
    headers: dict[str, object], body: object, reason: str
) -> None:
    problem = body_problem(headers, body)
    assert problem is not None and reason in problem


def test_a_usable_message_passes() -> None:
    assert (
        body_problem({**GOOD_HEADERS, "timelimit": [None, 30]}, [[], {"job_id": "j"}, {}]) is None
    )


@pytest.mark.parametrize("job_id", ["job\x00id", "x" * 5000, "../../etc", 7, "", "a b"], ids=repr)
def test_only_a_plausible_job_id_is_ever_looked_up(job_id: object) -> None:
    assert readable_job_id([[], {"job_id": job_id}, {}]) is None


def test_a_uuid_job_id_is_read_from_a_refused_body() -> None:
    job_id = "0b7d9c1e-3f4a-4b5c-8d6e-7f8091a2b3c4"
    assert readable_job_id({"job_id": job_id}) == job_id


def test_anything_raised_while_taking_a_message_in_refuses_that_message_only() -> None:
    def explode(_message: object, *_args: object) -> None:
        raise RuntimeError("psycopg DataError stand-in")

    with pytest.raises(InvalidTaskError, match="RuntimeError: psycopg DataError stand-in"):
        refusing_failures(explode, "advisor.analyze")(object())


def test_the_refusals_celery_handles_itself_pass_through_unchanged() -> None:
    def undecodable(_message: object) -> None:
        raise DecodeError("bad body")

    with pytest.raises(DecodeError):
        refusing_failures(undecodable, "advisor.analyze")(object())
