"""`advisor capacity`: workers each queue needs for the split, and each queue's backlog."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from jobs.broker import make_celery, queue_depths
from jobs.clock import utcnow
from jobs.contracts import queue_for, shadow_queue_for
from jobs.errors import BrokerUnreachable
from jobs.settings import Settings
from jobs.variants import Registry
from producers.commands.arguments import fraction, positive
from producers.commands.output import Subparsers, services
from producers.ops.bench_file import read_benches
from producers.ops.capacity import plan_capacity, render_plan
from producers.ops.memory import (
    DEFAULT_HOST_MEMORY_GB,
    DEFAULT_MODEL_MEMORY_GB,
    WORKER_OVERHEAD_GB,
    WorkerMemory,
    host_memory_gb,
    worker_memory,
)
from store.heartbeats import Heartbeats


def cmd_capacity(args: argparse.Namespace) -> int:
    built = services()
    settings, registry = built.settings, built.registry
    # Read first: a bad file is refused before any database or broker work.
    benches = read_benches(
        args.bench or [], {name: registry.get(name).base_model for name in registry.names}
    )
    depths, note = _queue_depths(settings, registry)
    notes = [note] if note is not None else []
    host = args.host_memory_gb or host_memory_gb()
    if host is None:
        host = DEFAULT_HOST_MEMORY_GB
        notes.append(f"host memory unreadable: assumed {host:g} GB (--host-memory-gb sets it)")
    memory: float | dict[str, WorkerMemory] = args.memory_gb or _worker_memory(
        Heartbeats(built.engine), registry, args.window_hours
    )
    plan = plan_capacity(
        built.engine, registry, built.rollouts, window_hours=args.window_hours,
        target_utilisation=args.target_utilisation, memory_per_worker_gb=memory,
        host_memory_gb=host, next_step=args.next_step, queue_depths=depths, benches=benches,
    )  # fmt: skip
    if notes:
        plan = replace(plan, warnings=(*plan.warnings, *notes))
    print(json.dumps(plan.to_dict(), indent=2) if args.json else render_plan(plan))
    return 0


def _worker_memory(
    heartbeats: Heartbeats, registry: Registry, window_hours: float
) -> dict[str, WorkerMemory]:
    """Each variant's workers' measured peak memory (their heartbeats, for the variant's
    current base model, within the window), else the documented default."""
    peaks = heartbeats.peak_memory_mb(utcnow() - timedelta(hours=window_hours))
    memory = {}
    for name in registry.names:
        base_model = registry.get(name).base_model
        memory[name] = worker_memory(base_model, peaks.get((name, base_model)))
    return memory


def _queue_depths(
    settings: Settings, registry: Registry
) -> tuple[dict[str, int] | None, str | None]:
    """Each variant queue's depth, or None and why the broker did not tell."""
    app = make_celery(settings, "advisor-capacity")
    try:
        names = sorted(registry.names)
        queues = [queue_for(n) for n in names] + [shadow_queue_for(n) for n in names]
        return queue_depths(app, queues), None
    except BrokerUnreachable as exc:
        return None, f"queue depths unknown: {exc}"
    finally:
        app.close()


def register(sub: Subparsers) -> None:
    p = sub.add_parser("capacity", help="workers each queue needs for the split")
    p.add_argument("--window-hours", type=positive, default=24.0, help="arrival window")
    p.add_argument("--target-utilisation", type=fraction, default=0.7)
    p.add_argument("--memory-gb", type=positive,
                   help="memory of one worker process (one model); default: the largest peak "
                   "RSS its workers reported in their heartbeats within the window, else its "
                   f"local weight files + {WORKER_OVERHEAD_GB:g} GB, or "
                   f"{DEFAULT_MODEL_MEMORY_GB:g} GB for a hub model id")  # fmt: skip
    p.add_argument("--host-memory-gb", type=positive,
                   help="memory of one worker host (default: this host's)")  # fmt: skip
    p.add_argument("--bench", type=Path, action="append", metavar="FILE",
                   help="a saved `advisor-worker bench --save FILE` (repeatable, one per "
                   "variant): a variant with no job in the window is planned at its "
                   "recommended B's jobs/h and peak memory instead of the default")  # fmt: skip
    p.add_argument("--next-step", type=fraction, help="plan this fine-tuned weight next")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_capacity)
