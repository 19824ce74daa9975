"""Migration 0008's backfill of the stored scores at N analyses, this tree against a baseline:
`python -m bench.backfill_speed [--jobs N] [--repeats R] [--baseline REF]
[--database sqlite|postgresql]`.

Each run builds a fresh database at revision 0007 holding N analyses of ~3 KB (as
bench.report_speed writes them) and times the upgrade to 0008: this tree's scripts, then a
copy of them whose 0008 is the baseline's (default e29ea1c, one row at a time).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from alembic import command
from sqlalchemy import text

from bench.report_speed import PG_ADMIN, _analysis, database
from jobs.clock import utcnow
from store import migrate
from store.db import engine_for

_MIGRATION = "alembic/versions/0008_stored_scores.py"
_COLUMNS = (
    "id, advisor, image_sha256, image_ref, subject, variant, model_used, assignment, "
    "weights_version, status, attempts, queued_at, publish_attempts, progress, llm_outputs"
)


def _fill(url: str, jobs: int) -> None:
    rng = random.Random(1)
    now = utcnow()
    rows = [
        {"id": str(uuid.UUID(int=rng.getrandbits(128))), "at": now - timedelta(minutes=i),
         "doc": json.dumps(_analysis(rng, 0.0))}
        for i in range(jobs)
    ]  # fmt: skip
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO jobs ({_COLUMNS}) VALUES (:id, 'ansel', 'x', 'sha256:x', 's', "
                 "'base', 'base', 'split', 1, 'succeeded', 1, :at, 0, 0, :doc)"),
            rows,
        )  # fmt: skip
    engine.dispose()


def _scripts_of(ref: str, where: Path) -> Path:
    """This tree's migration scripts with `ref`'s 0008."""
    scripts = where / "scripts"
    shutil.copytree(migrate.script_location(), scripts)
    source = subprocess.run(["git", "show", f"{ref}:{_MIGRATION}"], check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    (scripts / "versions" / Path(_MIGRATION).name).write_text(source)
    return scripts


def _timed_upgrade(kind: str, jobs: int, scripts: Path | None) -> float:
    with tempfile.TemporaryDirectory() as tmp, database(kind, tmp, PG_ADMIN, "0007") as url:
        _fill(url, jobs)
        config = migrate.alembic_config(url)
        if scripts is not None:
            config.set_main_option("script_location", str(scripts))
        started = time.perf_counter()
        command.upgrade(config, "0008")
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default="e29ea1c")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_scripts = _scripts_of(args.baseline, Path(tmp))
        new_s: list[float] = []
        old_s: list[float] = []
        for _ in range(args.repeats):  # interleaved, so a busy moment hits both alike
            new_s.append(_timed_upgrade(args.database, args.jobs, None))
            old_s.append(_timed_upgrade(args.database, args.jobs, old_scripts))

    def show(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"

    print(f"0008 backfill on {args.database} at {args.jobs} analyses, {args.repeats} runs each, "
          f"median (min-max): this tree {show(new_s)}; baseline {args.baseline} {show(old_s)}; "
          f"ratio {statistics.median(old_s) / statistics.median(new_s):.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
