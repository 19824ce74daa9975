"""Throughput of one queue served by one and by two worker processes."""

from __future__ import annotations

import time
from pathlib import Path

from bench import launcher, models
from bench.serving import ADVISOR, settings_for
from bench.stats import Figure, Section, ratios, table
from bench.targets import Target, worker_env
from jobs.clock import as_utc
from jobs.contracts import FINAL_STATUSES, Status
from producers import Client, SubmitItem
from producers.commands.demo import photo
from producers.services import Services
from store.models import Job
from store.repository import Repository


def drain(client: Client, repository: Repository, jobs: int, tag: str) -> float:
    """Submit `jobs` at once and wait for all; jobs/s from first queued_at to last completed_at."""
    items = [SubmitItem(photo(i), ADVISOR, subject=f"{tag}-{i}") for i in range(jobs)]
    ids = [h.id for h in client.submit_many(items)]
    deadline = time.monotonic() + 60 * jobs
    while True:
        # One query per poll, a few polls a second: the cores stay with the workers.
        rows = repository.find(Job.id.in_(ids))
        if all(Status(r.status) in FINAL_STATUSES for r in rows):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{tag}: jobs not final in time")
        time.sleep(0.25)
    failed = [r for r in rows if r.status != Status.SUCCEEDED]
    if failed:
        raise RuntimeError(f"{tag}: {len(failed)} jobs failed: {failed[0].error}")
    queued = [t for r in rows if (t := as_utc(r.queued_at)) is not None]
    completed = [t for r in rows if (t := as_utc(r.completed_at)) is not None]
    return jobs / (max(completed) - min(queued)).total_seconds()


def measure(
    target: Target, workdir: Path, size: str, jobs: int, repeats: int
) -> tuple[str, list[float], list[float], list[int]]:
    """(model label, jobs/s with 1 worker, with 2, jobs each worker of the pair took)."""
    model_dir = models.ensure_model(workdir, size)
    settings = settings_for(target, workdir, model_dir, f"scaling-{size}")
    env, logs = worker_env(settings), workdir / "logs"
    one: list[float] = []
    two: list[float] = []
    shares: list[int] = []
    with Services(settings) as built:
        client = Client(services=built)
        first = launcher.start(env, logs)
        try:
            launcher.wait_ready([first], built.repository)
            for rep in range(repeats):
                one.append(drain(client, built.repository, jobs, f"{size}-one-{rep}"))
                second = launcher.start(env, logs)
                try:
                    launcher.wait_ready([second], built.repository)
                    before = {hb.pid: hb.jobs_done for hb in built.repository.live_workers(60)}
                    two.append(drain(client, built.repository, jobs, f"{size}-two-{rep}"))
                    after = {hb.pid: hb.jobs_done for hb in built.repository.live_workers(60)}
                    shares += [after[p] - before.get(p, 0) for p in after]
                finally:
                    second.stop()
        finally:
            first.stop()
    return models.label(model_dir, size), one, two, shares


def run(target: Target, workdir: Path, plan: dict[str, tuple[int, int]]) -> Section:
    """`plan` maps model size to (jobs per measurement, repeats)."""
    section = Section(
        "Scaling",
        f"One queue ({target.name}), the jobs submitted in one `submit_many`; jobs/s from the "
        "first job's `queued_at` to the last one's `completed_at`. Each repeat measures one "
        "worker, then starts a second on the same queue and measures both.",
    )
    rows = []
    for size, (jobs, repeats) in plan.items():
        label, one, two, shares = measure(target, workdir, size, jobs, repeats)
        rows.append([
            label, str(jobs), str(len(one)), Figure.of(one).show(2), Figure.of(two).show(2),
            ratios(two, one).show(2), ", ".join(str(s) for s in shares) or "-",
        ])  # fmt: skip
    section.tables.append(
        table(
            [
                "model",
                "jobs",
                "repeats",
                "jobs/s, 1 worker",
                "jobs/s, 2 workers",
                "2 workers / 1",
                "jobs per worker (2-worker runs)",
            ],
            rows,
        )  # fmt: skip
    )
    section.notes.append(
        "This machine has two cores, shared with other work: a second worker can at most double "
        "throughput when a job leaves a core idle, and MLX's CPU matmuls already use both cores, "
        "so on the compute-bound model the pair splits the same cores, and each worker's "
        "OpenBLAS pool (one thread per core) then oversubscribes them. With several workers on "
        "one CPU host, give each `OPENBLAS_NUM_THREADS` = cores / workers. On a Mac each worker "
        "gets the GPU's time-slices instead; the ratio here is no forecast for that."
    )
    return section
