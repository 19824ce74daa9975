"""Shadow runs on real tiny-model workers: pairs on the same photo, and primaries go first."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest

from jobs.contracts import Assignment, Status
from producers import Client, SubmitItem
from producers.ops.report import build_report
from producers.services import Services
from store.db import engine_for
from store.models import Job
from store.repository import Repository
from store.submissions import NewJob
from tests.advisor_worker.test_worker_e2e import photo, settings_of, setup_env
from tests.support import Env, eventually, run_command, running_workers, wait_until_final

# How far apart a gate's read of the queue and a row's start may be, or two rows received
# together may start, on a busy machine.
RACE_SECONDS = 1.0


@pytest.fixture(params=["embedded", "redis"])
def env(request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path) -> Env:
    if request.param == "redis":
        broker = request.getfixturevalue("redis_url")
    else:
        broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    return setup_env(tmp_path, tiny_model_dir, f"sqlite:///{tmp_path / 'advisor.db'}", broker)


def advisor(env: Env, *args: str) -> str:
    out = run_command("producers.cli", list(args), env.full())
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.parametrize("env", ["embedded"], indirect=True)  # pairing is broker-independent
def test_a_half_shadow_share_pairs_about_half_of_20_jobs_on_the_same_photo(
    env: Env, tmp_path: Path
) -> None:
    shown = advisor(env, "rollout", "set", "ansel", "base=0.5", "fine_tuned=0.5",
                    "--shadow", "0.5", "--reason", "paired test")  # fmt: skip
    assert "shadow=0.5" in shown
    settings = settings_of(env)
    repo = Repository(engine_for(settings.resolved_database_url))
    # Each worker takes its share of the twenty (and the other's shadows) in one batch.
    env.values["ADVISOR_WORKER_BATCH"] = "16"
    with running_workers(env, ["base", "fine_tuned"], tmp_path), Client(settings) as client:
        handles = client.submit_many(
            [SubmitItem(photo(i), "ansel", subject=f"user-{i}") for i in range(20)]
        )
        results = {h.id: h.wait(120) for h in handles}  # what the callers get back
        shadows = repo.find(Job.shadow_of.is_not(None))
        wait_until_final(repo, [s.id for s in shadows], timeout=120)

    # Binomial(20, 0.5) drawn from random job ids: outside 3..17 once in ~2,600 runs.
    assert 3 <= len(shadows) <= 17, len(shadows)
    assert {h.assignment for h in handles} == {Assignment.SPLIT}
    assert {r.id for r in results.values()} == {h.id for h in handles}
    for shadow in (repo.get(s.id) for s in shadows):
        primary = results[shadow.shadow_of or ""]
        assert shadow.status == primary.status == Status.SUCCEEDED, (shadow.error, primary.error)
        assert shadow.image_sha256 == primary.image_sha256
        assert {shadow.variant, primary.variant} == {"base", "fine_tuned"}
        assert shadow.worker is not None and shadow.worker.startswith(f"{shadow.variant}-")
    report = build_report(repo.engine, days=1, advisor="ansel")
    routed = next(c for c in report.srm if c.stage == "routed")
    assert sum(routed.observed.values()) == 20  # the shadows are not in the split's counts
    assert sum(v.routed for v in report.variants) == 20
    assert sum(v.shadow_jobs for v in report.variants) == len(shadows)
    [paired] = report.paired
    assert paired.pairs == len(shadows)


def test_waiting_primary_jobs_start_before_any_further_shadow_job(env: Env, tmp_path: Path) -> None:
    settings = settings_of(env)
    repo = Repository(engine_for(settings.resolved_database_url))
    with Services(settings) as services:
        client = Client(services=services)
        # Primaries on fine_tuned (no worker serves it here) and their shadows on base.
        images = {hashlib.sha256(data).hexdigest(): data for data in map(photo, range(100, 112))}
        primaries, shadows = [], []
        for i, digest in enumerate(images):
            ref = f"sha256:{digest}"
            primary = NewJob("ansel", digest, ref, f"s{i}", "fine_tuned", Assignment.SPLIT, 1,
                             id=f"primary-{i}")  # fmt: skip
            primaries.append(primary)
            shadows.append(NewJob("ansel", digest, ref, f"s{i}", "base", Assignment.SHADOW, 1,
                                  shadow_of=primary.id, id=f"shadow-{i}"))  # fmt: skip
        _, paired = repo.create_with_shadows(primaries, images, shadows)
        assert services.outbox.publish(paired).sent == [s.id for s in paired]
        with running_workers(env, ["base"], tmp_path):
            eventually("the idle worker to take shadow work",
                       lambda: any(repo.get(s.id).started_at for s in paired), 120)  # fmt: skip
            mine = client.submit_many(
                [SubmitItem(photo(200 + i), "ansel", variant="base") for i in range(4)]
            )
            wait_until_final(repo, [h.id for h in mine], timeout=120)
            wait_until_final(repo, [s.id for s in paired], timeout=180)
    firsts = [repo.get(h.id) for h in mine]
    later = [repo.get(s.id) for s in paired]
    arrived = min(p.published_at for p in firsts if p.published_at is not None)
    primary_starts = [p.started_at for p in firsts if p.started_at is not None]
    assert all(p.status == Status.SUCCEEDED for p in firsts)
    assert all(s.status == Status.SUCCEEDED for s in later)
    # The gate yields to primaries waiting in the queue. A shadow may still start while the
    # primaries are unfinished: its gate read the queue just before they were published, or
    # a sibling slot took the last waiting primary off the queue as this one took the shadow
    # (the two then start together). Neither lets a primary wait behind a shadow.
    started_while_waiting = [
        (s.id, s.started_at) for s in later
        if s.started_at is not None and arrived < s.started_at < max(primary_starts)
        and (s.started_at - arrived).total_seconds() > RACE_SECONDS
        and max(primary_starts) - s.started_at > timedelta(seconds=RACE_SECONDS)
    ]  # fmt: skip
    assert started_while_waiting == [], (started_while_waiting, arrived, primary_starts)
    # And the shadows did use the idle time: some ran before the primaries came, the rest after.
    assert any(s.started_at and s.started_at < arrived for s in later)
    assert any(s.started_at and s.started_at > max(primary_starts) for s in later)
