"""The A/B report's time at 10,000 jobs and 1,000 shadow pairs, this tree against a baseline:
`python -m bench.report_speed [--jobs N] [--pairs N] [--repeats R] [--baseline REF]
[--database sqlite|postgresql] [--no-canary]`.

The baseline's producers/ops modules (default: where this branch left main, `git merge-base
HEAD main`) are copied out of git into a temporary package, so both implementations run in
one process over the same database, written as this tree's workers write it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, insert, text, update

from jobs.analysis import DIMENSIONS
from jobs.clock import utcnow
from jobs.contracts import Assignment, ErrorKind, Status
from jobs.settings import Settings
from producers.gateway.dashboard import dashboard_data
from producers.gateway.service import Gateway
from producers.ops.report import build_report
from producers.rollouts import RolloutStore
from producers.services import Services
from store import migrate
from store.db import engine_for
from store.models import Job, RolloutEvent
from store.scores import stored_scores

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


# A real critique is ~1,000 tokens: about 3 KB of JSON, mostly text around the scores.
_TEXT = "The light falls softly across the frame and the subject reads clearly. " * 2


def _analysis(rng: random.Random, shift: float) -> dict[str, Any]:
    scores = [max(1, min(10, round(rng.gauss(6 + shift, 1.5)))) for _ in DIMENSIONS]
    dims = [{"name": n, "score": s, "comment": _TEXT, "recommendation": _TEXT}
            for n, s in zip(DIMENSIONS, scores, strict=True)]  # fmt: skip
    return {
        "image_description": _TEXT * 2, "dimensions": dims,
        "overall_score": round(sum(scores) / len(scores), 1),
        "key_strengths": [_TEXT[:80]] * 3, "priority_improvements": [_TEXT[:80]] * 3,
        "technical_notes": _TEXT,
    }  # fmt: skip


def populate(engine: Engine, jobs: int, pairs: int, seed: int = 1, *, canary: bool = True) -> None:
    """`jobs` split jobs (90/10, 3% failed) plus `pairs` shadow jobs paired with some of them,
    all within the 10% canary's exposure (so the report judges it over its exposure too);
    without `canary`, no rollout history (the window's verdicts only)."""
    rng = random.Random(seed)
    now = utcnow()
    rows = []
    for i in range(jobs):
        variant = "fine_tuned" if rng.random() < 0.1 else "base"
        failed = rng.random() < 0.03
        done = now - timedelta(minutes=jobs - i)
        rows.append(_row(rng, i, variant, Assignment.SPLIT, done, failed))
    for k in range(pairs):
        primary = rows[k * (jobs // pairs)]
        if primary["status"] != Status.SUCCEEDED:
            primary.update(_row(rng, k * (jobs // pairs), primary["variant"], Assignment.SPLIT,
                                primary["completed_at"], False, job_id=primary["id"]))  # fmt: skip
        other = "base" if primary["variant"] == "fine_tuned" else "fine_tuned"
        shadow = _row(rng, jobs + k, other, Assignment.SHADOW,
                      primary["completed_at"] + timedelta(seconds=30), False)  # fmt: skip
        rows.append({**shadow, "shadow_of": primary["id"]})
    with engine.begin() as conn:
        conn.execute(insert(Job), rows)
    if not canary:
        return
    RolloutStore(engine).set("ansel", {"base": 0.9, "fine_tuned": 0.1}, actor="bench",
                             reason="canary", known_variants={"base", "fine_tuned"})  # fmt: skip
    with engine.begin() as conn:
        conn.execute(update(RolloutEvent).values(created_at=now - timedelta(minutes=jobs + 1)))


def _row(
    rng: random.Random,
    i: int,
    variant: str,
    assignment: str,
    done: Any,
    failed: bool,
    job_id: str | None = None,
) -> dict[str, Any]:
    shift = 0.2 if variant == "fine_tuned" else 0.0
    analysis = None if failed else _analysis(rng, shift)
    return {
        "id": job_id or str(uuid.UUID(int=rng.getrandbits(128))), "idempotency_key": None,
        "advisor": "ansel", "image_sha256": f"{i:064x}", "image_ref": f"sha256:{i:064x}",
        "subject": f"user-{i}", "variant": variant, "model_used": "ab_test_" + variant,
        "assignment": assignment, "weights_version": 1, "status":
        Status.FAILED if failed else Status.SUCCEEDED, "queued_at": done - timedelta(seconds=60),
        "started_at": done - timedelta(seconds=45), "completed_at": done,
        "queue_wait_ms": 15_000, "inference_ms": None if failed else rng.randint(30_000, 50_000),
        "output_tokens": None if failed else 900, "error_kind":
        ErrorKind.INTERNAL if failed else None, "llm_outputs": analysis, "shadow_of": None,
        **stored_scores(analysis),
    }  # fmt: skip


def old_build_report(where: Path, ref: str) -> Callable[..., Any]:
    """`ref`'s build_report: every module of its producers/ops, copied under `where` as the
    package `old_ops`, imports among them pointed at the copies (the rest is this tree's)."""
    package = where / "old_ops"
    package.mkdir()
    listed = subprocess.run(["git", "ls-tree", "--name-only", f"{ref}:producers/ops"],
                            check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
    names = [n.removesuffix(".py") for n in listed if n.endswith(".py")]
    if "report" not in names:
        raise SystemExit(f"{ref} has no producers/ops/report.py; pick a ref after the layout move")
    for name in names:
        source = subprocess.run(["git", "show", f"{ref}:producers/ops/{name}.py"], check=True,
                                capture_output=True, text=True).stdout  # fmt: skip
        source = source.replace("from producers.ops import", "from old_ops import")
        (package / f"{name}.py").write_text(source.replace("producers.ops.", "old_ops."))
    sys.path.insert(0, str(where))
    return importlib.import_module("old_ops.report").build_report  # type: ignore[no-any-return]


def dashboard_seconds(url: str, tmp: Path, repeats: int) -> list[float]:
    """/dashboard/data's answer (health, split, charts, the report over 8 days), `repeats`
    times after one warm-up call, through a gateway's own collaborators."""
    adapter = tmp / "adapters" / "ansel-v1"
    adapter.mkdir(parents=True)
    registry = tmp / "adapters" / "registry.json"
    registry.write_text(json.dumps({"variants": {"fine_tuned": {"adapter": adapter.name}}}))
    settings = Settings(data_dir=tmp / "data", database_url=url, registry=registry,
                        broker_url=f"sqla+sqlite:///{tmp}/broker.db")  # fmt: skip
    seconds = []
    with Services(settings) as services:
        gateway = Gateway.of(services)
        dashboard_data(gateway, 24 * 8)
        for _ in range(repeats):
            started = time.perf_counter()
            dashboard_data(gateway, 24 * 8)
            seconds.append(time.perf_counter() - started)
    return seconds


def timed(build: Callable[..., Any], engine: Engine, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        build(engine, days=30, advisor=None)
        seconds.append(time.perf_counter() - started)
    return seconds


@contextmanager
def database(kind: str, tmp: str, pg_admin: str, revision: str = "head") -> Iterator[str]:
    """A fresh database of `kind` migrated to `revision`; a PostgreSQL one is dropped after."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp}/report.db"
        migrate.upgrade(url, revision)
        yield url
        return
    name = f"bench_report_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_admin, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = pg_admin.rsplit("/", 1)[0] + f"/{name}"
        migrate.upgrade(url, revision)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", help="a git ref (default: merge-base of HEAD and main)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--no-canary", action="store_true", help="no rollout history")
    parser.add_argument("--pg-admin", default=PG_ADMIN, help="a PostgreSQL URL to create it on")
    args = parser.parse_args()
    ref = (
        args.baseline
        or subprocess.run(
            ["git", "merge-base", "HEAD", "main"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    with tempfile.TemporaryDirectory() as tmp, database(args.database, tmp, args.pg_admin) as url:
        engine = engine_for(url)
        populate(engine, args.jobs, args.pairs, canary=not args.no_canary)
        old = old_build_report(Path(tmp), ref)
        new_s: list[float] = []
        old_s: list[float] = []
        for _ in range(args.repeats):  # interleaved, so a busy moment hits both alike
            new_s += timed(build_report, engine, 1)
            old_s += timed(old, engine, 1)
        dash_s = dashboard_seconds(url, Path(tmp), args.repeats)
        engine.dispose()

    def show(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"

    history = "no rollout history" if args.no_canary else "a canary exposed"
    print(f"report on {args.database} ({history}) at {args.jobs} jobs + {args.pairs} shadow pairs, "
          f"{args.repeats} runs each, median (min-max): this tree {show(new_s)}; baseline "
          f"{ref[:10]} {show(old_s)}; ratio "
          f"{statistics.median(old_s) / statistics.median(new_s):.1f}x; /dashboard/data "
          f"(this tree, warm) {show(dash_s)}")  # fmt: skip


if __name__ == "__main__":
    main()
