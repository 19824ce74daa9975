"""Metrics: the exposition parses as Prometheus text and carries the expected samples."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from jobs.clock import utcnow
from jobs.contracts import ErrorKind
from producers.ops.metrics import render_metrics
from producers.rollouts import RolloutStore
from store.db import engine_for
from store.models import WorkerHeartbeat
from tests.producers.conftest import beat, make_settings
from tests.producers.crafted_jobs import Crafter

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def at(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_metrics_carry_queue_depths_jobs_inference_histogram_and_live_workers(
    migrated_url: str, tmp_path: Path, registry_file: Path
) -> None:
    engine = engine_for(migrated_url)
    crafter = Crafter(engine)
    fast, slow = crafter.queue(2, variant="base")
    crafter.succeed(fast, inference_ms=500)
    crafter.succeed(slow, inference_ms=15_000)
    done, broken, *_queued = crafter.queue(4, variant="fine_tuned")
    crafter.succeed(done, inference_ms=75_000)
    crafter.fail(broken, ErrorKind.INVALID_OUTPUT)
    for worker in ("b1", "b2"):
        beat(migrated_url, "base", worker)
    beat(migrated_url, "fine_tuned", "gone")
    with engine.begin() as conn:
        stale = utcnow() - timedelta(minutes=10)
        conn.execute(
            update(WorkerHeartbeat).where(WorkerHeartbeat.worker == "gone").values(last_seen=stale)
        )
    weights = {"base": 0.9, "fine_tuned": 0.1}
    RolloutStore(engine).set("ansel", weights, known_variants=set(weights), actor="op", reason="t")
    settings = make_settings(tmp_path, migrated_url, registry_file)

    text = render_metrics(engine, settings, {"advisor.base": 4, "advisor.fine_tuned": 7})

    found = samples(text.decode())
    assert at(found, "advisor_queue_depth", queue="advisor.fine_tuned") == 7
    assert at(found, "advisor_jobs", variant="fine_tuned", status="queued") == 2
    assert at(found, "advisor_jobs", variant="fine_tuned", status="failed") == 1
    assert at(found, "advisor_jobs", variant="base", status="succeeded") == 2
    assert at(found, "advisor_db_queued_jobs", queue="advisor.fine_tuned") == 2
    assert at(found, "advisor_inference_seconds_bucket", variant="base", le="1.0") == 1
    assert at(found, "advisor_inference_seconds_bucket", variant="base", le="20.0") == 2
    assert at(found, "advisor_inference_seconds_bucket", variant="fine_tuned", le="60.0") == 0
    assert at(found, "advisor_inference_seconds_bucket", variant="fine_tuned", le="90.0") == 1
    assert at(found, "advisor_inference_seconds_bucket", variant="base", le="+Inf") == 2
    assert at(found, "advisor_inference_seconds_count", variant="base") == 2
    assert at(found, "advisor_inference_seconds_sum", variant="base") == pytest.approx(15.5)
    assert at(found, "advisor_live_workers", variant="base") == 2
    assert ("advisor_live_workers", frozenset({("variant", "fine_tuned")})) not in found
    assert at(found, "advisor_rollout_weight", advisor="ansel", variant="fine_tuned") == 0.1
