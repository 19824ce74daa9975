"""`advisor-worker`: run one variant's worker, check a variant, build the tiny test model."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from pathlib import Path

from advisor_worker.devtools import launchd
from jobs.errors import AdvisorError, summary
from jobs.settings import get_settings, mask_url
from jobs.variants import Registry, load_registry_for

logger = logging.getLogger("advisor_worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="advisor-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve one variant's queue (one process, one model)")
    run.add_argument("--variant", required=True)
    check = sub.add_parser("check", help="load and verify a variant, print its fingerprint")
    check.add_argument("--variant", required=True)
    check.add_argument("--json", action="store_true")
    build = sub.add_parser("build-tiny-model", help="write a random-weight Qwen3-VL checkpoint")
    build.add_argument("dir", type=Path)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--size", choices=["tiny", "medium"], default="tiny")
    launchd.add_arguments(
        sub.add_parser("launchd", help="write launchd plists: N workers of one variant (macOS)")
    )
    adapter = sub.add_parser("make-adapter", help="write a random LoRA adapter for a model dir")
    adapter.add_argument("model_dir", type=Path)
    adapter.add_argument("out_dir", type=Path)
    adapter.add_argument("--format", choices=["mlx", "peft"], default="mlx")
    adapter.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if args.command == "build-tiny-model":
            from advisor_worker.devtools.tiny_model import build_tiny_model

            path = build_tiny_model(args.dir, seed=args.seed, size=args.size)
            print(path)
            return 0
        if args.command == "launchd":
            return launchd.launchd_main(args)
        if args.command == "make-adapter":
            from advisor_worker.devtools.adapter_maker import write_random_adapter

            print(
                write_random_adapter(args.model_dir, args.out_dir, fmt=args.format, seed=args.seed)
            )
            return 0
        if args.command == "check":
            return _check(args.variant, args.json)
        return _run(args.variant)
    except AdvisorError as exc:
        print(f"advisor-worker: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"advisor-worker: error: {summary(exc, typed=True, limit=300)}", file=sys.stderr)
        return 1
    except Exception as exc:
        # The one catch-all: a bug or a broken model file, not bad input; the traceback is
        # in the log at DEBUG.
        logger.debug("Unexpected error", exc_info=exc)
        print(
            f"advisor-worker: internal error ({summary(exc, typed=True, limit=300)}); run with "
            "ADVISOR_LOG_LEVEL=DEBUG for the traceback",
            file=sys.stderr,
        )
        return 1


def _registry() -> Registry:
    registry = load_registry_for(get_settings())
    logger.info("Variants from %s", registry.describe())
    return registry


def _provider_for(registry: Registry, variant_name: str):  # type: ignore[no-untyped-def]
    # A bad registry or variant is refused before any model work starts.
    variant = registry.get(variant_name)
    from advisor_worker import blas

    # OpenBLAS must be loaded before mlx.core is imported (by the provider module).
    blas_path = blas.load_openblas()
    from advisor_worker.provider import ModelProvider

    if blas_path is None and sys.platform == "linux":
        logger.warning(
            "OpenBLAS not found: MLX uses its slow reference BLAS "
            "(apt-get install libopenblas0-pthread)"
        )
    return ModelProvider(variant, model_image_pixels=get_settings().model_image_pixels)


def _check(variant_name: str, as_json: bool) -> int:
    registry = _registry()
    provider = _provider_for(registry, variant_name)
    try:
        loaded = provider.load()
    finally:
        provider.close()
    location = registry.location
    where: object = registry.where
    if location is not None:
        where = location.to_dict() if as_json else location.description
    info = {
        "variant": loaded.variant,
        "registry": where,
        "base_model": loaded.base_model,
        "base_model_from": registry.base_model_from,
        "adapter_fingerprint": loaded.adapter_fingerprint,
        "load_seconds": round(loaded.load_seconds, 3),
        "warmup_seconds": round(loaded.warmup_seconds, 3),
        "model_image_pixels": loaded.geometry.max_pixels,
        **loaded.runtime,
    }
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def _run(variant_name: str) -> int:
    from advisor_worker import prompts
    from advisor_worker.celery_app import app, bind_runtime, bind_shadow_gate
    from advisor_worker.heartbeat import Heartbeat
    from advisor_worker.notices import NoticeThread
    from advisor_worker.shadow import ShadowGate
    from advisor_worker.slots import MIB
    from advisor_worker.watchdog import Watchdog
    from jobs.advisors import get_persona, personas
    from jobs.analysis import generation_schema
    from jobs.contracts import queue_for, shadow_queue_for
    from jobs.courier import Courier
    from jobs.db import engine_for
    from jobs.deliveries import DeliveryStore
    from jobs.errors import ConfigError
    from jobs.repository import Repository

    settings = get_settings()
    registry = _registry()
    engine = engine_for(settings.resolved_database_url)
    repo = Repository(engine)
    provider = _provider_for(registry, variant_name)
    # Only now: the runtime imports mlx, which must come after OpenBLAS is loaded.
    from advisor_worker.runtime import WorkerRuntime

    batch = settings.worker_batch
    loaded = provider.load(schema=generation_schema(settings.text_limit))
    queue = queue_for(variant_name)
    name = f"{variant_name}-{os.getpid()}@{socket.gethostname()}"
    plan = provider.plan_slots(
        slots=batch,
        prompts=[(prompts.system_prompt(get_persona(a)), prompts.user_prompt())
                 for a in personas()],
        output_tokens=settings.max_output_tokens,
        memory_mb=settings.worker_memory_mb,
    )  # fmt: skip
    if not plan.fits:
        provider.close()
        raise ConfigError(plan.refusal())
    # B=1 too: one decode path and one sampler at every B.
    scheduler = provider.start_batching(slots=batch, prefill_chunk=settings.prefill_chunk)
    logger.info(
        "Batching up to %d analyses at once: %.0f MiB of KV cache a row (%d tokens), "
        "budget %.0f MiB (%s)",
        batch, plan.bytes_per_row / MIB, plan.tokens_per_row, plan.budget_bytes / MIB,
        plan.budget_source,
    )  # fmt: skip
    logger.info(
        "Worker %s serving %s (base %s, adapter %s, batch %d): loaded in %.2fs, warm-up %.2fs; "
        "device=%s dtype=%s blas=%s; broker %s; database %s",
        name, queue, loaded.base_model, loaded.adapter_fingerprint or "none", batch,
        loaded.load_seconds, loaded.warmup_seconds, loaded.runtime.get("device"),
        loaded.runtime.get("dtype"), loaded.runtime.get("blas"),
        mask_url(settings.resolved_broker_url), mask_url(settings.resolved_database_url),
    )  # fmt: skip
    heartbeat = Heartbeat(
        repo,
        {
            "worker": name,
            "variant": variant_name,
            "queue": queue,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "base_model": loaded.base_model,
            "adapter_fingerprint": loaded.adapter_fingerprint,
            "load_seconds": loaded.load_seconds,
        },
        interval=settings.heartbeat_interval,
        lease_seconds=settings.worker_live_window,
        slots=batch,
    )
    heartbeat.start()
    # Solo and thread pools have no hard limit of their own (it needs a child process).
    watchdog = Watchdog(settings.task_time_limit)
    watchdog.start()
    notices = NoticeThread(Courier(settings, DeliveryStore(engine), sender=f"worker {name}"))
    notices.start()
    bind_runtime(
        WorkerRuntime(settings, repo, provider, loaded, heartbeat, watchdog, scheduler, notices)
    )
    if not settings.worker_remote_control:
        from advisor_worker.control import restrict_remote_control

        refused = restrict_remote_control()
        logger.info("Remote control: inspection only (%d control commands refused)", len(refused))
    # The shadow queue comes second: its jobs run only when none of this queue's wait.
    bind_shadow_gate(ShadowGate(app, variant_name))
    queues = f"{queue},{shadow_queue_for(variant_name)}"
    # No prefork: MLX state must not cross a fork, and one process serves one model. B > 1:
    # B threads each hold one unacknowledged message and feed its job to the MLX thread.
    pool = ["--pool=solo"] if batch == 1 else ["--pool=threads", f"--concurrency={batch}"]
    try:
        app.worker_main(
            ["worker", *pool, "-Q", queues, "-n", name, "-l", settings.log_level,
             "--without-gossip", "--without-mingle", "-E"]
        )  # fmt: skip
    finally:
        bind_shadow_gate(None)
        bind_runtime(None)
        watchdog.stop()
        notices.stop(timeout=4 * settings.webhook_timeout)
        heartbeat.stop()
        provider.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
