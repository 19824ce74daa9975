"""`advisor-worker`: run one variant's worker, check or benchmark a variant, build test models."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from advisor_worker import blas
from advisor_worker.devtools import launchd
from jobs.errors import AdvisorError, summary
from jobs.settings import get_settings
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
    build.add_argument(
        "--vocab",
        type=int,
        default=None,
        metavar="N",
        help="keep only Qwen's first N BPE ranks (default: all 151,643, the real shape)",
    )
    launchd.add_arguments(
        sub.add_parser("launchd", help="write launchd plists: N workers of one variant (macOS)")
    )
    bench = sub.add_parser(
        "bench", help="jobs/h, latency and memory at each B on this host; recommends a B"
    )
    bench.add_argument("--variant", required=True)
    bench.add_argument("--batch", default="1,2,4,8", help="batch sizes, e.g. 1,2,4,8")
    bench.add_argument("--jobs", type=int, default=8, help="jobs per batch size")
    bench.add_argument(
        "--text-limit",
        type=int,
        default=None,
        help="the schema's string bound (default: the real-shape workload's, ~1,000 tokens)",
    )
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--save", type=Path, help="also write the result as JSON to this file")
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

            path = build_tiny_model(args.dir, seed=args.seed, size=args.size, vocab=args.vocab)
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
        if args.command == "bench":
            return _bench(args)
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


def _load_openblas() -> None:
    """Before advisor_worker.boot is imported: MLX binds its BLAS when it is first imported."""
    if blas.load_openblas() is None and sys.platform == "linux":
        logger.warning(
            "OpenBLAS not found: MLX uses its slow reference BLAS "
            "(apt-get install libopenblas0-pthread)"
        )


def _check(variant_name: str, as_json: bool) -> int:
    registry = _registry()
    _load_openblas()
    from advisor_worker import boot  # imports MLX: only now, after OpenBLAS

    provider = boot.provider_for(registry, variant_name, get_settings())
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


def _bench(args: argparse.Namespace) -> int:
    registry = _registry()
    _load_openblas()
    # Both import MLX: only now, after OpenBLAS (before, the bench measured reference BLAS).
    from advisor_worker import boot
    from advisor_worker.devtools import worker_bench

    batches = worker_bench.parse_batches(args.batch)

    settings = get_settings()
    provider = boot.provider_for(registry, args.variant, settings)
    try:
        result = worker_bench.run_bench(
            provider,
            variant=args.variant,
            batches=batches,
            jobs=args.jobs,
            pixel_budget=settings.model_image_pixels,
            temperature=settings.temperature,
            text_limit=args.text_limit or worker_bench.REAL_SHAPE_TEXT_LIMIT,
        )
    finally:
        provider.close()
    if args.save is not None:
        worker_bench.save(result, args.save)
    print(json.dumps(result.to_dict(), indent=2) if args.json else worker_bench.render(result))
    return 0


def _run(variant_name: str) -> int:
    registry = _registry()
    _load_openblas()
    from advisor_worker import boot  # imports MLX: only now, after OpenBLAS

    return boot.boot(get_settings(), registry, variant_name).serve()


if __name__ == "__main__":
    sys.exit(main())
