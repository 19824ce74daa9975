"""A job id as typed: the full id, or a unique prefix of at least 8 hex digits."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from jobs.errors import AmbiguousJobId, JobNotFound
from store.db import engine_for
from store.models import Job
from tests.producers.crafted_jobs import Crafter

TWINS = ("099e45a8-0000-4000-8000-000000000001", "099e45a8-1111-4000-8000-000000000002")
LONE = "7c3f00d2-2222-4000-8000-000000000003"


@pytest.fixture
def crafter(migrated_url: str) -> Crafter:
    crafter = Crafter(engine_for(migrated_url))
    queued = crafter.queue(3)
    with crafter.engine.begin() as conn:
        for old, new in zip(queued, (*TWINS, LONE), strict=True):
            conn.execute(update(Job).where(Job.id == old).values(id=new))
    return crafter


def test_a_unique_prefix_of_eight_or_more_digits_names_its_job(crafter: Crafter) -> None:
    resolve = crafter.repo.resolve_id
    assert resolve(LONE) == LONE
    assert resolve(LONE[:8]) == resolve(LONE[:8].upper()) == resolve(LONE[:13]) == LONE
    assert resolve(TWINS[1][:10]) == TWINS[1]
    assert crafter.repo.get(resolve("7c3f00d2")).id == LONE


def test_an_ambiguous_prefix_is_refused_naming_every_match(crafter: Crafter) -> None:
    with pytest.raises(AmbiguousJobId, match="matches several jobs") as refused:
        crafter.repo.resolve_id("099e45a8")
    assert all(twin in str(refused.value) for twin in TWINS)


def test_a_short_or_unknown_prefix_finds_no_job(crafter: Crafter) -> None:
    with pytest.raises(JobNotFound, match="no job id starts with it"):
        crafter.repo.resolve_id("deadbeef")
    # Under 8 digits it is taken as a whole id, which no job has.
    assert crafter.repo.resolve_id("7c3f00d") == "7c3f00d"
    with pytest.raises(JobNotFound):
        crafter.repo.get(crafter.repo.resolve_id("7c3f00d"))
