"""`advisor demo`: the main job end to end on the embedded default (SQLite, no broker server)."""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from jobs.analysis import REAL_SHAPE_TEXT_LIMIT
from jobs.contracts import BASE_VARIANT, FINAL_STATUSES, Status
from jobs.errors import AdvisorError
from jobs.settings import Settings, get_settings, mask_url
from producers.client import Client
from producers.commands.output import Subparsers
from producers.commands.rollout import rollout_control
from producers.errors import JobTimeout
from producers.feedback import FeedbackStore, FeedbackValues
from producers.inputs import SubmitItem
from producers.ops.rollout import default_actor
from producers.services import Services
from store import migrate
from store.models import Job
from store.repository import Repository

ADVISOR = "ansel"
WORKER = [sys.executable, "-m", "advisor_worker.cli"]
# The tiny random model writes every string to its length cap; short caps keep the demo quick.
DEMO_TEXT_LIMIT = "24"
DEMO_ADAPTER = "demo-ansel"  # beside the registry
# The registry's top-level description: marks a file the demo may rewrite.
DEMO_REGISTRY = "written by `advisor demo`; rewritten by every demo run"
# Simulated raters: clearly not people; every row they write has simulated=True and this source.
SIMULATED_SOURCE = "simulated-rater"
# Their mean rating per variant (1-5): the demo's random adapter is no better, so this
# difference is made up, only so the feedback verdict has something to find.
SIMULATED_MEAN_RATING = {"base": 3.2, "fine_tuned": 3.8}
# The real-shape job: a 4:3 photo larger than the pixel budget (the worker scales it down, as
# a phone's), ansel's real prompt, critiques of real length (REAL_SHAPE_TEXT_LIMIT).
REAL_SHAPE_PHOTO = (1024, 768)
REAL_SHAPE_WORKER = "base-real-shape"  # its log: worker-base-real-shape.log


class DemoFailed(AdvisorError):
    """The demo could not set up or run its workers."""


@dataclass
class DemoPlan:
    settings: Settings
    env: dict[str, str]
    registry: Path


def _worker_tool(args: list[str], env: dict[str, str]) -> str:
    try:
        out = subprocess.run([*WORKER, *args], env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise DemoFailed(f"cannot run advisor-worker: {exc}") from exc
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        if "No module named" in out.stderr:
            last += " (install the worker side: pip install 'mondrian-advisor[worker]')"
        raise DemoFailed(f"advisor-worker {args[0]} failed: {last}")
    return out.stdout.strip()


def prepare(settings: Settings) -> DemoPlan:
    """Tiny model (unless ADVISOR_BASE_MODEL is set), a random adapter for ansel, a registry.

    The registry goes where the default lookup finds it ($DATA_DIR/adapters/registry.json)
    and names its base model, so every later command sees the demo's variants unconfigured.
    """
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    registry = settings.default_registry
    _claim(registry)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    base_model = settings.base_model
    if base_model is None:
        model_dir = (data / "models" / "tiny-qwen3-vl").resolve()
        if not (model_dir / "config.json").exists():
            print(f"Building the tiny random-weight Qwen3-VL in {model_dir} ...", file=sys.stderr)
            _worker_tool(["build-tiny-model", str(model_dir)], env)
        base_model = str(model_dir)
    adapter = registry.parent / DEMO_ADAPTER
    if not (adapter / "adapter_config.json").exists():
        print(f"Writing a random LoRA adapter for {ADVISOR} in {adapter} ...", file=sys.stderr)
        _worker_tool(["make-adapter", base_model, str(adapter), "--format", "peft"], env)
    entry = {"adapter": DEMO_ADAPTER, "advisors": [ADVISOR], "description": "demo"}
    document = {"description": DEMO_REGISTRY, "base_model": base_model,
                "variants": {"fine_tuned": entry}}  # fmt: skip
    registry.write_text(json.dumps(document, indent=2) + "\n")
    (data / "demo-registry.json").unlink(missing_ok=True)  # where earlier demos wrote it
    if settings.registry is not None and settings.registry.expanduser().resolve() != registry:
        print(f"Note: ADVISOR_REGISTRY={settings.registry} is set, so commands run after the "
              f"demo read it, not the demo's {registry}; unset it to use the demo's",
              file=sys.stderr)  # fmt: skip
    if settings.registry is not None:
        env["ADVISOR_REGISTRY"] = str(registry)  # overrides the user's, for the demo only
    else:
        # The workers find it by the default lookup, and their logs say so truthfully.
        env.pop("ADVISOR_REGISTRY", None)
    env.update(
        ADVISOR_DATA_DIR=str(data),
        ADVISOR_DATABASE_URL=settings.resolved_database_url,
        ADVISOR_BROKER_URL=settings.resolved_broker_url,
        ADVISOR_TEXT_LIMIT=os.environ.get("ADVISOR_TEXT_LIMIT", DEMO_TEXT_LIMIT),
    )
    demo_settings = settings.model_copy(
        update={"registry": registry, "text_limit": int(env["ADVISOR_TEXT_LIMIT"])}
    )
    return DemoPlan(demo_settings, env, registry)


def _claim(registry: Path) -> None:
    """The demo writes the default registry only if it is absent or the demo's own."""
    if not registry.exists():
        registry.parent.mkdir(parents=True, exist_ok=True)
        return
    try:
        ours = json.loads(registry.read_text()).get("description") == DEMO_REGISTRY
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise DemoFailed(
            f"{registry} exists and was not written by `advisor demo`; the demo would replace "
            "it. Move it, or run the demo with another ADVISOR_DATA_DIR"
        )


def photo(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A generated 'photograph': a sky gradient, a horizon and a few shapes."""
    rng = random.Random(seed)
    width, height = size
    scale = width / 320
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    top = (rng.randrange(40, 120), rng.randrange(80, 160), rng.randrange(150, 255))
    for y in range(height):
        shade = tuple(int(c * (1 - y / scale / 400)) for c in top)
        draw.line([(0, y), (width, y)], fill=shade)
    horizon = int(rng.randrange(120, 200) * scale)
    ground = (rng.randrange(20, 90), rng.randrange(60, 120), 40)
    draw.rectangle([0, horizon, width, height], fill=ground)
    for _ in range(rng.randrange(2, 6)):
        x, y = int(rng.randrange(320) * scale), rng.randrange(horizon)
        r = int(rng.randrange(8, 40) * scale)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(rng.randrange(256),) * 3)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def start_worker(
    variant: str, name: str, env: dict[str, str], log_dir: Path
) -> subprocess.Popen[bytes]:
    """`advisor-worker run --variant V`, logging to worker-NAME.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"worker-{name}.log").open("wb") as log:
        return subprocess.Popen(
            [*WORKER, "run", "--variant", variant], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def start_workers(plan: DemoPlan, log_dir: Path) -> list[tuple[str, subprocess.Popen[bytes]]]:
    return [(v, start_worker(v, v, plan.env, log_dir)) for v in ("base", "fine_tuned")]


def wait_live(
    repository: Repository,
    window: float,
    procs: list[tuple[str, subprocess.Popen[bytes]]],
    log_dir: Path,
) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for variant, proc in procs:
            if proc.poll() is not None:
                tail = (log_dir / f"worker-{variant}.log").read_text(errors="replace")[-800:]
                raise DemoFailed(f"the {variant} worker exited {proc.returncode}: {tail.strip()}")
        pids = {hb.pid for hb in repository.live_workers(window)}
        if all(proc.pid in pids for _, proc in procs):
            return
        time.sleep(0.5)
    raise DemoFailed(f"workers not live after 300 s; see logs in {log_dir}")


def stop_workers(procs: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # warm shutdown: a running task finishes first
    for _, proc in procs:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()


def table(jobs: list[Job]) -> str:
    lines = [f"{'variant':<11} {'jobs':>4} {'ok':>4} {'failed':>6} {'mean score':>10} "
             f"{'mean ms':>8} {'tok/s':>7}  adapter"]  # fmt: skip
    for variant in sorted({j.variant for j in jobs}):
        rows = [j for j in jobs if j.variant == variant]
        ok = [j for j in rows if j.status == Status.SUCCEEDED and j.llm_outputs]
        scores = [float(j.llm_outputs["overall_score"]) for j in ok if j.llm_outputs]
        score = sum(scores) / len(scores) if scores else float("nan")
        ms = sum(j.inference_ms or 0 for j in ok) / len(ok) if ok else float("nan")
        secs = sum((j.inference_ms or 0) for j in ok) / 1000
        tps = sum(j.output_tokens or 0 for j in ok) / secs if secs else float("nan")
        fp = next((j.adapter_fingerprint[:12] for j in ok if j.adapter_fingerprint), "-")
        lines.append(f"{variant:<11} {len(rows):>4} {len(ok):>4} {len(rows) - len(ok):>6} "
                     f"{score:>10.2f} {ms:>8.0f} {tps:>7.0f}  {fp}")  # fmt: skip
    return "\n".join(lines)


def run_real_shape(
    plan: DemoPlan, client: Client, repository: Repository, log_dir: Path, timeout: float
) -> Job:
    """One job of the real shape, forced to base, on a base worker whose text limit lets the
    tiny model write a critique of real length (~1,000 tokens); the row as it ended."""
    env = {**plan.env, "ADVISOR_TEXT_LIMIT": str(REAL_SHAPE_TEXT_LIMIT)}
    proc = start_worker(BASE_VARIANT, REAL_SHAPE_WORKER, env, log_dir)
    try:
        wait_live(repository, plan.settings.worker_live_window, [(REAL_SHAPE_WORKER, proc)],
                  log_dir)  # fmt: skip
        handle = client.submit(photo(0, REAL_SHAPE_PHOTO), ADVISOR, variant=BASE_VARIANT,
                               subject=f"demo-real-shape-{time.time():.0f}")  # fmt: skip
        try:
            return client.wait(handle.id, timeout)
        except JobTimeout:
            return client.status(handle.id)
    finally:
        stop_workers([(REAL_SHAPE_WORKER, proc)])


def real_shape_lines(job: Job) -> list[str]:
    """What the real-shape job measured, and how `advisor capacity` plans without jobs."""
    if job.status != Status.SUCCEEDED or not job.inference_ms or not job.output_tokens:
        return [f"Real-shape job {job.id}: {job.status} ({job.error_kind or 'no figures'}); "
                f"see worker-{REAL_SHAPE_WORKER}.log"]  # fmt: skip
    seconds = job.inference_ms / 1000
    return [
        f"Real-shape job (ansel's prompt, a {REAL_SHAPE_PHOTO[0]}x{REAL_SHAPE_PHOTO[1]} photo "
        f"the worker scaled to {job.model_image_width}x{job.model_image_height} = "
        f"{job.image_tokens} image tokens, text limit {REAL_SHAPE_TEXT_LIMIT}) on a base "
        f"worker: {job.output_tokens} output tokens after a {job.prompt_tokens}-token prompt "
        f"in {seconds:.1f}s = {job.output_tokens / seconds:.1f} tok/s",
        "That is this host with the tiny random model, one job at a time (the real 4-bit 4B "
        "on an M1 Pro: 30-100 s). `advisor capacity` plans from the jobs workers served in "
        "its window (after this demo: these); on a fresh install it has none and assumes 60 s "
        "a job, unless given `--bench FILE` from `advisor-worker bench` (this workload at each "
        "B on the Mac the plan is for)",
    ]


def simulate_raters(store: FeedbackStore, jobs: list[Job], seed: int = 0) -> int:
    """One simulated rating per succeeded job (not by a person: `simulated`, SIMULATED_SOURCE)."""
    rng = random.Random(seed)
    rated = 0
    for job in jobs:
        if job.status != Status.SUCCEEDED:
            continue
        mean = SIMULATED_MEAN_RATING.get(job.variant, SIMULATED_MEAN_RATING["base"])
        rating = min(5, max(1, round(rng.gauss(mean, 0.9))))
        rated_as = FeedbackValues(rating=rating, helpful=rating >= 4, comment="simulated rater",
                                  source=SIMULATED_SOURCE)  # fmt: skip
        store.record(job.id, rated_as, simulated=True)
        rated += 1
    return rated


def cmd_demo(args: argparse.Namespace) -> int:
    if not 0 <= args.split <= 1:
        raise DemoFailed("--split must be between 0 and 1")
    if not 0 <= args.shadow <= 1:
        raise DemoFailed("--shadow must be between 0 and 1")
    plan = prepare(get_settings())
    settings = plan.settings
    migrate.upgrade(settings.resolved_database_url)
    print(f"Database {mask_url(settings.resolved_database_url)}; broker "
          f"{mask_url(settings.resolved_broker_url)}", file=sys.stderr)  # fmt: skip
    log_dir = settings.data_dir / "demo-logs"
    with Services(settings) as built:
        client = Client(services=built)
        weights = {"base": 1 - args.split, "fine_tuned": args.split}
        rollout_control(built).set_weights(
            ADVISOR, weights, reason="advisor demo", actor=default_actor(), shadow=args.shadow
        )
        procs = start_workers(plan, log_dir)
        try:
            print("Starting one base and one fine-tuned worker ...", file=sys.stderr)
            wait_live(built.repository, settings.worker_live_window, procs, log_dir)
            run_id = f"{time.time():.0f}"
            items = [SubmitItem(photo(i), ADVISOR, subject=f"demo-{run_id}-{i}")
                     for i in range(args.jobs)]  # fmt: skip
            handles = client.submit_many(items)
            ids = [h.id for h in handles]
            shadow_ids = [j.id for j in built.repository.find(Job.shadow_of.in_(ids))]
            started = time.monotonic()
            while True:
                jobs = [client.status(i) for i in ids]
                shadows = [client.status(i) for i in shadow_ids]
                done = sum(Status(j.status) in FINAL_STATUSES for j in jobs)
                paired = sum(Status(j.status) in FINAL_STATUSES for j in shadows)
                bar = "#" * (30 * done // len(ids))
                print(f"\r[{bar:<30}] {done}/{len(ids)} jobs, {paired}/{len(shadows)} shadow",
                      end="", file=sys.stderr)  # fmt: skip
                if (done == len(ids) and paired == len(shadows)) or (
                    time.monotonic() - started > args.timeout
                ):
                    break
                time.sleep(0.5)
            print(file=sys.stderr)
            took = time.monotonic() - started
        finally:
            stop_workers(procs)
        rated = simulate_raters(built.feedback, jobs) if args.feedback else 0
        print("Running one real-shape job (about 1,000 output tokens) ...", file=sys.stderr)
        real = run_real_shape(plan, client, built.repository, log_dir, args.timeout)
    print(table(jobs))
    print(f"{done}/{len(ids)} jobs finished in {took:.1f}s, plus {paired}/{len(shadows)} shadow "
          f"jobs (the same photos on the other arm); worker logs in {log_dir}")  # fmt: skip
    if args.feedback:
        print(f"{rated} SIMULATED ratings (source {SIMULATED_SOURCE!r}, simulated=true: made-up "
              "raters, not people); see `advisor report --advisor ansel`")  # fmt: skip
    print("\n".join(real_shape_lines(real)))
    finished = done == len(ids) and all(j.status == Status.SUCCEEDED for j in jobs)
    return 0 if finished and real.status == Status.SUCCEEDED else 1


def register(sub: Subparsers) -> None:
    demo = sub.add_parser("demo", help="run the main job end to end on the embedded default")
    demo.add_argument("--jobs", type=int, default=20, help="photos to submit (default 20)")
    demo.add_argument("--split", type=float, default=0.5, help="fine-tuned share (default 0.5)")
    demo.add_argument(
        "--shadow",
        type=float,
        default=0.5,
        help="share of split jobs also run on the other arm (default 0.5)",
    )
    demo.add_argument(
        "--feedback",
        action="store_true",
        help="add SIMULATED ratings of the critiques (labelled as simulated)",
    )
    demo.add_argument("--timeout", type=float, default=600, help="seconds to wait for all jobs")
    demo.set_defaults(handler=cmd_demo)
