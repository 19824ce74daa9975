"""Run the benchmarks and write docs/benchmarks.md: `python -m bench.run [--quick]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import machine, report, sequential, submit
from bench.stats import Section
from bench.targets import DEFAULT_POSTGRES_ADMIN, DEFAULT_REDIS, Target

SECTIONS = ("submit", "serving", "scaling", "batching", "decoding", "lora", "sequential")


@dataclass(frozen=True)
class Plan:
    """How much of each benchmark a run does."""

    submit_jobs: int
    submit_repeats: int
    serving: dict[str, int]  # model size -> jobs
    scaling: dict[str, tuple[int, int]]  # model size -> (jobs, repeats)
    batching: dict[str, tuple[list[int], int]]  # model size -> (values of B, jobs per row)
    decoding: list[str]
    decoding_repeats: int
    lora: list[str]
    lora_rounds: int
    lora_loads: int
    lora_tokens: int
    sequential: sequential.Plan


PLANS = {
    "quick": Plan(
        submit_jobs=200,
        submit_repeats=3,
        serving={"tiny": 5, "medium": 1},
        scaling={"tiny": (20, 2)},
        batching={"tiny": ([1, 2, 4, 8], 2)},
        decoding=["tiny"],
        decoding_repeats=3,
        lora=["tiny"],
        lora_rounds=8,
        lora_loads=1,
        lora_tokens=64,
        sequential=sequential.Plan(experiments=500, jobs=400),
    ),
    "full": Plan(
        submit_jobs=1000,
        submit_repeats=5,
        serving={"tiny": 10, "medium": 4},
        scaling={"tiny": (40, 3), "medium": (4, 1)},
        batching={"medium": ([1, 2, 4, 8], 1)},
        decoding=["tiny", "medium"],
        decoding_repeats=4,
        lora=["tiny", "medium"],
        lora_rounds=8,
        lora_loads=2,
        lora_tokens=32,
        sequential=sequential.Plan(experiments=2000, jobs=400),
    ),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run, under 5 minutes")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "advisor-bench",
        help="models, adapters, databases and worker logs (models are reused across runs)",
    )  # fmt: skip
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="a Redis database it may flush")
    parser.add_argument(
        "--postgres-admin", default=DEFAULT_POSTGRES_ADMIN,
        help="a PostgreSQL URL allowed to drop and create the advisor_bench database",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # OpenBLAS must be loaded before mlx.core is imported (see advisor_worker/blas.py), so the
    # MLX-using benchmark modules are imported only after it.
    from advisor_worker import blas

    blas.load_openblas()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import mlx.core as mx

    from bench import adapters, batching, decoding, scaling, serving

    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    wanted = set(args.only or SECTIONS)
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    served = Target("Redis + PostgreSQL", args.redis, args.postgres_admin)
    embedded = Target("embedded: SQLite + sqla broker")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections: list[Section] = []
    load: list[tuple[str, str]] = []

    def timed(name: str, make: Callable[[], list[Section]]) -> None:
        if name not in wanted:
            return
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        before, started = os.getloadavg()[0], time.monotonic()
        made = make()
        seconds = time.monotonic() - started
        for section in made:
            section.seconds = seconds / len(made)
        load.append((name, f"{before:.2f} / {os.getloadavg()[0]:.2f}"))
        sections.extend(made)
        print(f"[bench] {name} took {seconds:.0f} s", file=sys.stderr, flush=True)

    timed("submit", lambda: [submit.run([served, embedded], workdir, plan.submit_jobs,
                                        plan.submit_repeats)])  # fmt: skip
    timed("serving", lambda: list(serving.run(served, workdir, plan.serving)))
    timed("scaling", lambda: [scaling.run(served, workdir, plan.scaling)])
    timed("batching", lambda: [section for size, (batches, per_row) in plan.batching.items()
                               for section in batching.sections(served, workdir, size, batches,
                                                                per_row)])  # fmt: skip
    timed("decoding", lambda: [decoding.run(workdir, plan.decoding, plan.decoding_repeats)])
    timed(
        "lora",
        lambda: [
            adapters.run(
                workdir, plan.lora, tokens=plan.lora_tokens, rank=16,
                rounds=plan.lora_rounds, loads=plan.lora_loads,
            )
        ],
    )  # fmt: skip
    timed("sequential", lambda: [sequential.run(plan.sequential)])
    mx.clear_streams()  # on the thread that used MLX, else the process aborts at exit
    command = "python -m bench.run" + (" --quick" if args.quick else "")
    if args.only:
        command += " --only " + " ".join(args.only)
    if args.only and args.out.exists():
        # Only some sections ran: the page keeps the others' measurements.
        stamp = (
            f"_Measured {when} by `{command}` ({mode} run) on "
            f"{machine.summary()}; the other sections are from the run named at the top._"
        )
        text = report.splice(args.out.read_text(), sections, stamp)
    else:
        text = report.render(
            when=when,
            mode=mode,
            command=command,
            machine=machine.describe(args.redis, args.postgres_admin),
            load=load,
            sections=sections,
            skipped=[s for s in SECTIONS if s not in wanted],
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"[bench] wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
