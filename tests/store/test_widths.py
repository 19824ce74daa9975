"""The widths producers check are the widths the job table has."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.contracts import MAX_IMAGE_PATH, NAME_WIDTH, PATH_PREFIX, AnalyzeRequestV1
from producers.gateway.schemas import AnalyzeSubmission
from store.models import Delivery, Job


def test_a_path_reference_at_the_path_limit_exactly_fills_the_image_ref_column() -> None:
    assert len(PATH_PREFIX + "x" * MAX_IMAGE_PATH) == Job.__table__.c.image_ref.type.length
    # Version 1 messages, still served during an upgrade, carry the reference.
    assert AnalyzeRequestV1.model_fields["image_ref"].metadata[-1].max_length == len(
        PATH_PREFIX + "x" * MAX_IMAGE_PATH
    )


def test_the_name_columns_are_as_wide_as_the_names_producers_accept() -> None:
    for column in (Job.__table__.c.subject, Job.__table__.c.idempotency_key):
        assert column.type.length == NAME_WIDTH
    assert Delivery.__table__.c.queue.type.length == NAME_WIDTH


def test_the_gateway_takes_a_path_at_the_limit_and_refuses_one_character_more() -> None:
    AnalyzeSubmission(advisor="ansel", image="x" * MAX_IMAGE_PATH, subject="s" * NAME_WIDTH)
    with pytest.raises(ValidationError):
        AnalyzeSubmission(advisor="ansel", image="x" * (MAX_IMAGE_PATH + 1))
    with pytest.raises(ValidationError):
        AnalyzeSubmission(advisor="ansel", image="x", subject="s" * (NAME_WIDTH + 1))
