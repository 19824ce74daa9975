"""Guard replay: round by round over recorded jobs, equal to what live rounds decided."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from jobs.clock import utcnow
from jobs.contracts import ErrorKind
from jobs.variants import load_registry
from producers.ops.guard import enforce
from producers.ops.replay import ReplayRound, replay
from producers.rollouts import RolloutStore
from store.db import engine_for
from store.models import RolloutEvent
from tests.producers.conftest import make_settings, settings_env
from tests.producers.crafted_jobs import Crafter
from tests.support import run_command

EVERY = timedelta(minutes=30)


def crafted_canary(url: str, start: datetime) -> tuple[Crafter, RolloutStore]:
    """A 10% canary set at `start`; over 8 hours, healthy at first, then failing."""
    engine = engine_for(url)
    store = RolloutStore(engine)
    store.set("ansel", {"base": 0.9, "fine_tuned": 0.1}, known_variants={"base", "fine_tuned"},
              actor="op", reason="canary")  # fmt: skip
    with engine.begin() as conn:
        conn.execute(update(RolloutEvent).values(created_at=start))
    crafter = Crafter(engine)
    for i, job_id in enumerate(crafter.queue(80, variant="base")):
        crafter.succeed(job_id, inference_ms=40_000 + 300 * (i % 9))
        crafter.set_times([job_id], completed_at=start + timedelta(minutes=5 + 6 * i))
    for i, job_id in enumerate(crafter.queue(24, variant="fine_tuned")):
        if i < 14:
            crafter.succeed(job_id, inference_ms=41_000 + 300 * (i % 7))
        else:
            crafter.fail(job_id, ErrorKind.TIMEOUT)
        crafter.set_times([job_id], completed_at=start + timedelta(minutes=7 + 20 * i))
    return crafter, store


def as_compared(r: ReplayRound) -> tuple[object, ...]:
    return (r.at, r.variant, r.action, r.rule, r.p, r.estimate, r.ci_low, r.ci_high,
            r.weights_version, r.weight)  # fmt: skip


def test_replay_decides_what_live_rounds_decided_at_the_same_times_and_writes_nothing(
    migrated_url: str, registry_file: Path
) -> None:
    start = (utcnow() - timedelta(hours=12)).replace(microsecond=0)
    crafter, store = crafted_canary(migrated_url, start)
    registry = load_registry(registry_file, "test-model")
    rounds = [start + EVERY * k for k in range(19)]

    live = []
    for at in rounds:
        for decision in enforce(crafter.engine, store, registry, now=at):
            live.append(ReplayRound.of(at, decision))
    with crafter.engine.connect() as conn:
        events = conn.scalar(select(func.count()).select_from(RolloutEvent))

    replayed = replay(crafter.engine, "ansel", start=start, end=rounds[-1], every=EVERY)

    assert [as_compared(r) for r in replayed] == [as_compared(r) for r in live]
    actions = [r.action for r in replayed]
    # The canary is judged OK at first, rolled back once, then held at weight 0.
    assert actions[0] == "hold" and "ok" in actions and actions.count("rollback") == 1
    assert actions[-1] == "hold" and replayed[-1].weight == 0.0
    assert replayed[-1].weights_version == 2
    with crafter.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(RolloutEvent)) == events


def test_the_replay_command_prints_each_round_as_text_or_json(
    tmp_path: Path, sqlite_db: str, registry_file: Path
) -> None:
    start = (utcnow() - timedelta(hours=12)).replace(microsecond=0)
    crafter, _ = crafted_canary(sqlite_db, start)
    env = settings_env(make_settings(tmp_path, sqlite_db, registry_file))
    span = ["--from", start.isoformat(), "--to", (start + timedelta(hours=9)).isoformat()]

    def advisor(*args: str) -> subprocess.CompletedProcess[str]:
        return run_command("producers.cli", ["guard", "replay", *args], env)

    as_json = advisor("--advisor", "ansel", *span, "--every", "30", "--json")
    text = advisor("--advisor", "ansel", *span, "--every", "30")
    backwards = advisor("--advisor", "ansel", "--from", span[3], "--to", span[1])

    expected = replay(crafter.engine, "ansel", start=start, end=start + timedelta(hours=9),
                      every=EVERY)  # fmt: skip
    assert json.loads(as_json.stdout) == [json.loads(json.dumps(r.to_dict())) for r in expected]
    lines = text.stdout.splitlines()
    assert len(lines) == len(expected) + 1
    assert lines[-1].startswith("19 decisions at 30-minute rounds, 1 rollback(s), first at ")
    assert "rollback" in text.stdout and "failure rate" in text.stdout
    assert backwards.returncode == 2 and "is after --to" in backwards.stderr
