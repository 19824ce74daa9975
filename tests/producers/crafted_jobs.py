"""Crafted job rows for the operations tests, written through the repository's real transitions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, update

from jobs.analysis import DIMENSIONS, Analysis, GeneratedAnalysis
from jobs.contracts import Assignment, ErrorKind
from producers.rollouts import RolloutStore
from store.db import engine_for
from store.lifecycle import Outcome, StartOutcome
from store.models import Job
from store.repository import Repository
from store.submissions import NewJob


def analysis(scores: Sequence[int]) -> dict[str, Any]:
    """A valid stored Analysis with these seven dimension scores."""
    generated = GeneratedAnalysis(
        image_description="a test photo",
        dimensions=[
            {"name": n, "score": s, "comment": "c", "recommendation": "r"}  # type: ignore[misc]
            for n, s in zip(DIMENSIONS, scores, strict=True)
        ],
        key_strengths=["one", "two"],
        priority_improvements=["one", "two"],
        technical_notes="none",
    )
    return Analysis.from_generated(generated).model_dump()


def set_weights(url: str, advisor: str, weights: dict[str, float]) -> int:
    """Set `advisor`'s split between base and fine_tuned; the new weights version."""
    store = RolloutStore(engine_for(url))
    variants = {"base", "fine_tuned"}
    return store.set(advisor, weights, known_variants=variants, actor="test", reason="test").version


class Crafter:
    """Queues, starts, succeeds and fails jobs exactly as producers and workers do."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.repo = Repository(engine)
        self._serial = 0

    def queue(
        self,
        n: int,
        *,
        advisor: str = "ansel",
        variant: str = "base",
        assignment: Assignment = Assignment.SPLIT,
        weights_version: int = 1,
    ) -> list[str]:
        jobs = []
        for _ in range(n):
            self._serial += 1
            jobs.append(
                NewJob(
                    advisor=advisor,
                    image_sha256=f"{self._serial:064x}",
                    image_ref=f"sha256:{self._serial:064x}",
                    subject=f"user-{self._serial}",
                    variant=variant,
                    assignment=assignment,
                    weights_version=weights_version,
                )
            )
        return [job.id for job, _ in self.repo.create_jobs(jobs)]

    def start(self, job_id: str) -> str:
        worker = f"worker-{job_id[:8]}"
        outcome = self.repo.start(job_id, worker, lease_seconds=600, max_attempts=3)
        assert outcome is StartOutcome.STARTED
        return worker

    def succeed(
        self,
        job_id: str,
        scores: Sequence[int] = (6, 6, 6, 6, 6, 6, 6),
        *,
        inference_ms: int = 30_000,
        output_tokens: int = 900,
    ) -> None:
        worker = self.start(job_id)
        outcome = Outcome(analysis(scores), "{}", 1000, output_tokens, inference_ms, "analysis/v1")
        assert self.repo.succeed(job_id, worker, outcome)

    def fail(
        self, job_id: str, kind: ErrorKind, *, started: bool = True, inference_ms: int | None = None
    ) -> None:
        worker = self.start(job_id) if started else None
        assert self.repo.fail(
            job_id, kind, f"crafted {kind}", worker=worker, inference_ms=inference_ms
        )

    def cancel(self, job_id: str, *, started: bool = True) -> None:
        """Cancelled while queued, or while running (requested, then recorded by its worker)."""
        worker = self.start(job_id) if started else None
        self.repo.cancel(job_id)
        if worker is not None:
            assert self.repo.record_cancelled(job_id, worker, "crafted cancel", output_tokens=40)

    def set_times(self, job_ids: Sequence[str], **times: datetime | int) -> None:
        """Direct UPDATE for tests that need controlled timestamps or waits."""
        with self.engine.begin() as conn:
            conn.execute(update(Job).where(Job.id.in_(list(job_ids))).values(**times))
