"""Where `submit_many` spends its time: `python -m bench.submit_profile [--jobs N] [--repeats R]`.

Redis + PostgreSQL only (the production pair); prints the ratio against raw `send_task`
per repeat and a cProfile table of one `submit_many` call, by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

from bench.submit import ADVISOR, photos, raw_send
from bench.targets import DEFAULT_POSTGRES_ADMIN, DEFAULT_REDIS, Target
from producers import Client, SubmitItem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.submit_profile", description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=30, help="rows of the profile table")
    args = parser.parse_args(argv)
    target = Target("Redis + PostgreSQL", DEFAULT_REDIS, DEFAULT_POSTGRES_ADMIN)
    workdir = Path(tempfile.gettempdir()) / "advisor-bench"
    ratios: list[float] = []
    profile = cProfile.Profile()
    for rep in range(args.repeats):
        settings = target.fresh(workdir / f"submit-profile-{rep}")
        images = photos(args.jobs + 1, salt=rep)
        raw = raw_send(settings, args.jobs, batched=False) / args.jobs * 1e3
        with Client(settings) as client:
            client.submit(images[-1], ADVISOR)  # warm: engines, broker pool, personas
            items = [SubmitItem(img, ADVISOR) for img in images[: args.jobs]]
            started = time.perf_counter()
            if rep == args.repeats - 1:
                profile.enable()
            handles = client.submit_many(items)
            profile.disable()
            many = (time.perf_counter() - started) / args.jobs * 1e3
        if not all(h.published for h in handles):
            raise RuntimeError("benchmark jobs were not published")
        ratios.append(many / raw)
        print(f"repeat {rep}: raw {raw:.3f} ms/job, submit_many {many:.3f} ms/job, "
              f"ratio {many / raw:.2f}")  # fmt: skip
    print(f"ratio range {min(ratios):.2f}-{max(ratios):.2f} (last repeat profiled)")
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
