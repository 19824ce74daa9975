"""The analyze message's versions: what each one must carry, and how an unknown one is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.contracts import (
    MESSAGE_VERSION,
    AnalyzeRequest,
    UnservedVersion,
    read_request,
)

JOB = "0b6c3b1e-2d0e-4a53-9d55-6b8f3f3a1c2e"


def test_the_current_message_names_only_the_job_the_variant_and_the_version() -> None:
    body = AnalyzeRequest(job_id=JOB, variant="base").model_dump()
    assert body == {"version": MESSAGE_VERSION, "job_id": JOB, "variant": "base"}
    assert read_request(body) == AnalyzeRequest(job_id=JOB, variant="base")


def test_a_version_1_body_without_a_version_field_is_read_as_its_job_and_variant() -> None:
    body = {"job_id": JOB, "advisor": "ansel", "variant": "base", "image_ref": "sha256:" + "a" * 64}
    assert read_request(body) == AnalyzeRequest(version=1, job_id=JOB, variant="base")
    assert read_request({**body, "version": 1}).version == 1


def test_a_version_1_body_keeps_its_own_rules() -> None:
    with pytest.raises(ValidationError, match="advisor"):
        read_request({"job_id": JOB, "variant": "base", "image_ref": "path:/a.jpg"})
    with pytest.raises(ValidationError, match="extra"):
        read_request({"job_id": JOB, "advisor": "a", "variant": "base", "image_ref": "x", "n": 1})


def test_fields_a_version_2_reader_does_not_know_are_ignored() -> None:
    body = {"version": 2, "job_id": JOB, "variant": "base", "priority": "high"}
    assert read_request(body) == AnalyzeRequest(job_id=JOB, variant="base")


@pytest.mark.parametrize("version", [3, 0, "2", True, None])
def test_an_unknown_version_is_refused_naming_the_versions_served(version: object) -> None:
    with pytest.raises(UnservedVersion, match=r"which serves versions 1, 2") as refused:
        read_request({"version": version, "job_id": JOB, "variant": "base"})
    assert repr(version) in str(refused.value)
