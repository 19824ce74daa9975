"""Where `submit_many` spends its time: `python -m bench.submit_profile [--jobs N] [--repeats R]`.

Redis + PostgreSQL only (the production pair). Per repeat: raw `send_task` and one
`submit_many` of the same number of jobs; prints the ratio, the wall time per job of each
part of the submit (timed around the collaborators `submit_many` calls, no profiler), the SQL
statements it sent, and with `--cprofile` a cProfile table of the last repeat.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event

import producers.client
from bench.submit import ADVISOR, photos, raw_send
from bench.targets import DEFAULT_POSTGRES_ADMIN, DEFAULT_REDIS, Target
from producers import Client, SubmitItem

# The parts of a submit, in order, and what each one times.
PARTS = {
    "intake": "checks and photo intake (`check_item`: decode, EXIF, colour, privacy, hash)",
    "route": "router (`decide`, `shadow_for`: cached weights and heartbeats)",
    "rows": "rows and inline images, one transaction (`create_with_shadows`)",
    "publish": "publish (`Publisher.send`: messages and task-sent events, pipelined)",
    "mark": "published mark, one transaction (`mark_published`)",
}


def _timed(spent: dict[str, float], part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[part] += time.perf_counter() - started

    return timed


@contextmanager
def parts_of(client: Client, spent: dict[str, float], sql: list[str]) -> Iterator[None]:
    """Times each part of `client`'s submits into `spent` and lists its SQL into `sql`."""
    services = client._services  # the bench looks inside; production code never does
    check_item = producers.client.check_item
    producers.client.check_item = _timed(spent, "intake", check_item)
    wrapped = {
        (services.router, "decide"): "route",
        (services.router, "shadow_for"): "route",
        (services.repository, "create_with_shadows"): "rows",
        (services.publisher, "send"): "publish",
        (services.repository, "mark_published"): "mark",
    }
    for (owner, name), part in wrapped.items():
        setattr(owner, name, _timed(spent, part, getattr(owner, name)))

    def statement(_c: Any, _cur: Any, text: str, params: Any, _ctx: Any, many: bool) -> None:
        rows = f" x{len(params)} rows (executemany)" if many else ""
        sql.append(" ".join(text.split()[:4]) + " ..." + rows)

    event.listen(services.engine, "before_cursor_execute", statement)
    try:
        yield
    finally:
        event.remove(services.engine, "before_cursor_execute", statement)
        producers.client.check_item = check_item
        for owner, name in wrapped:
            vars(owner).pop(name, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.submit_profile", description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cprofile", action="store_true", help="profile the last repeat")
    parser.add_argument("--top", type=int, default=30, help="rows of the cProfile table")
    args = parser.parse_args(argv)
    target = Target("Redis + PostgreSQL", DEFAULT_REDIS, DEFAULT_POSTGRES_ADMIN)
    workdir = Path(tempfile.gettempdir()) / "advisor-bench"
    per_job: dict[str, list[float]] = defaultdict(list)
    profile = cProfile.Profile()
    sql: list[str] = []
    for rep in range(args.repeats):
        settings = target.fresh(workdir / f"submit-profile-{rep}")
        images = photos(args.jobs + 1, salt=rep)
        raw = raw_send(settings, args.jobs, batched=False) / args.jobs * 1e3
        spent: dict[str, float] = defaultdict(float)
        with Client(settings) as client:
            client.submit(images[-1], ADVISOR)  # warm: engines, broker pool, personas
            items = [SubmitItem(img, ADVISOR) for img in images[: args.jobs]]
            sql.clear()
            with parts_of(client, spent, sql):
                if args.cprofile and rep == args.repeats - 1:
                    profile.enable()
                started = time.perf_counter()
                handles = client.submit_many(items)
                many = (time.perf_counter() - started) / args.jobs * 1e3
                profile.disable()
        if not all(h.published for h in handles):
            raise RuntimeError("benchmark jobs were not published")
        for part in PARTS:
            per_job[part].append(spent[part] / args.jobs * 1e3)
        per_job["other"].append(many - sum(spent.values()) / args.jobs * 1e3)
        per_job["submit_many"].append(many)
        per_job["raw"].append(raw)
        per_job["ratio"].append(many / raw)
        print(f"repeat {rep}: raw {raw:.3f} ms/job, submit_many {many:.3f} ms/job, "
              f"ratio {many / raw:.2f}")  # fmt: skip
    print(f"\nms per job, median (min-max) over {args.repeats} repeats of {args.jobs} jobs:")
    labels = {**PARTS, "other": "the rest (building rows and handles)",
              "submit_many": "`submit_many` in all", "raw": "raw `send_task` (baseline)",
              "ratio": "ratio `submit_many` / raw (x)"}  # fmt: skip
    for key, label in labels.items():
        values = per_job[key]
        print(f"| {label} | {statistics.median(values):.3f} ({min(values):.3f}-"
              f"{max(values):.3f}) |")  # fmt: skip
    print(f"\nSQL statements of one `submit_many` ({len(sql)}):")
    for line in sql:
        print(f"  {line}")
    if args.cprofile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(args.top)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
