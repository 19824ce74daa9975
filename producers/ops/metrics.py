"""Prometheus exposition: queue depths, jobs by status and variant, inference time, live workers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import Engine, case, func, select

from jobs.clock import utcnow
from jobs.contracts import Status, queue_of
from jobs.settings import Settings
from store.models import Job, Rollout, WorkerHeartbeat

# Analyses take ~30-100 s on the real model and 1-10 s on dev models; buckets cover both.
INFERENCE_BUCKETS_SECONDS = (
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    45.0,
    60.0,
    90.0,
    120.0,
    150.0,
    200.0,
    300.0,
)


class JobsCollector(Collector):
    """Reads the database on every scrape; nothing is cached between scrapes."""

    def __init__(
        self, engine: Engine, settings: Settings, queue_depths: Mapping[str, int] | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.queue_depths = dict(queue_depths or {})

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "advisor_queue_depth", "Messages waiting in the broker queue", labels=["queue"]
        )
        for queue, n in sorted(self.queue_depths.items()):
            depth.add_metric([queue], n)
        yield depth

        with self.engine.connect() as conn:
            is_shadow = Job.shadow_of.is_not(None)
            counts = conn.execute(
                select(Job.variant, Job.status, is_shadow, func.count()).group_by(
                    Job.variant, Job.status, is_shadow
                )
            ).all()
            buckets = [
                func.sum(case((Job.inference_ms <= int(b * 1000), 1), else_=0))
                for b in INFERENCE_BUCKETS_SECONDS
            ]
            timing = conn.execute(
                select(Job.variant, func.count(), func.sum(Job.inference_ms), *buckets)
                .where(Job.status == Status.SUCCEEDED, Job.inference_ms.is_not(None))
                .group_by(Job.variant)
            ).all()
            since = utcnow() - timedelta(seconds=self.settings.worker_live_window)
            live = conn.execute(
                select(WorkerHeartbeat.variant, func.count())
                .where(WorkerHeartbeat.last_seen >= since, WorkerHeartbeat.stopped_at.is_(None))
                .group_by(WorkerHeartbeat.variant)
            ).all()
            rollouts = conn.execute(select(Rollout.advisor, Rollout.weights)).all()

        jobs = GaugeMetricFamily(
            "advisor_jobs",
            "Jobs in the database by variant and status",
            labels=["variant", "status"],
        )
        queued_db = GaugeMetricFamily(
            "advisor_db_queued_jobs",
            "Jobs the database holds as queued, per queue (compare with advisor_queue_depth)",
            labels=["queue"],
        )
        by_state: dict[tuple[str, str], int] = defaultdict(int)
        for variant, status, shadow, n in sorted(counts):
            by_state[(variant, status)] += n
            if status == Status.QUEUED:
                queued_db.add_metric([queue_of(variant, is_shadow=bool(shadow))], n)
        for (variant, status), n in sorted(by_state.items()):
            jobs.add_metric([variant, status], n)
        yield jobs
        yield queued_db

        hist = HistogramMetricFamily(
            "advisor_inference_seconds",
            "Inference time of succeeded jobs",
            labels=["variant"],
        )
        for variant, n, total_ms, *cumulative in sorted(timing):
            points = [
                (floatToGoString(b), float(c or 0))
                for b, c in zip(INFERENCE_BUCKETS_SECONDS, cumulative, strict=True)
            ]
            hist.add_metric([variant], [*points, ("+Inf", float(n))], float(total_ms or 0) / 1000)
        yield hist

        workers = GaugeMetricFamily(
            "advisor_live_workers",
            "Worker processes with a heartbeat inside the live window",
            labels=["variant"],
        )
        for variant, n in sorted(live):
            workers.add_metric([variant], n)
        yield workers

        weights = GaugeMetricFamily(
            "advisor_rollout_weight", "Current routing weight", labels=["advisor", "variant"]
        )
        for advisor, split in sorted(rollouts, key=lambda r: r[0]):
            for variant, w in sorted(split.items()):
                weights.add_metric([advisor, variant], float(w))
        yield weights


def render_metrics(
    engine: Engine, settings: Settings, queue_depths: Mapping[str, int] | None = None
) -> bytes:
    """The Prometheus text format (0.0.4) of everything above, for a /metrics endpoint."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(engine, settings, queue_depths))
    return generate_latest(registry)
