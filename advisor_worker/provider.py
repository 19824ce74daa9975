"""The model provider: one (base model, adapter) pair per process, all MLX work on one thread."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_vlm import load as mlx_vlm_load
from PIL import Image

from advisor_worker import batching, blas, generation
from advisor_worker import slots as slots_module
from advisor_worker.batching import BatchScheduler
from advisor_worker.errors import ModelLoadFailed
from advisor_worker.slots import SlotPlan
from jobs.analysis import generation_schema
from jobs.variants import Variant
from photos.intake import ModelGeometry

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class LoadedVariant:
    variant: str
    base_model: str
    adapter_fingerprint: str | None
    load_seconds: float
    warmup_seconds: float
    runtime: dict[str, Any]
    # The image sizes this model takes unresized (ADVISOR_MODEL_IMAGE_PIXELS and its processor).
    geometry: ModelGeometry


def weights_dtype(model: nn.Module) -> str:
    """The dtype holding most of the model's parameters (uint32: quantized, packed)."""
    sizes: Counter[str] = Counter()
    leaves: list[tuple[str, mx.array]] = tree_flatten(model.parameters())  # type: ignore[assignment]
    for _name, array in leaves:
        sizes[str(array.dtype).removeprefix("mlx.core.")] += array.size
    return sizes.most_common(1)[0][0] if sizes else "none"


class ModelProvider:
    """Owns the model. MLX streams are thread-local, so every MLX call goes through `_mlx`."""

    def __init__(
        self, variant: Variant, *, model_image_pixels: int, pixels_chosen: bool = True
    ) -> None:
        self.variant = variant
        self.model_image_pixels = model_image_pixels
        self.pixels_chosen = pixels_chosen  # ADVISOR_MODEL_IMAGE_PIXELS was set, not defaulted
        self._mlx = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlx")
        self.model: nn.Module | None = None
        self.processor: Any = None
        self.loaded: LoadedVariant | None = None
        self._scheduler: BatchScheduler | None = None
        self._batch_loop: Future[None] | None = None

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._mlx.submit(fn, *args, **kwargs).result()

    def load(self, *, warmup: bool = True, schema: dict[str, Any] | None = None) -> LoadedVariant:
        """Load, verify the adapter (if any) and warm up, before the worker takes work.

        Warm-up generates against `schema`, the one real jobs use, so the first job pays
        neither the kernels' JIT compile nor the grammar's compile.
        """
        self.loaded = self.run(self._load, warmup, schema or generation_schema())
        return self.loaded

    def start_batching(
        self, *, slots: int, prefill_chunk: int = batching.DEFAULT_PREFILL_CHUNK
    ) -> BatchScheduler:
        """Hand the MLX thread to a continuous-batch scheduler until close(); B=1 included."""
        if self.model is None:
            raise ModelLoadFailed("start_batching() before load()")
        scheduler = BatchScheduler(
            self.model, self.processor, slots=slots, prefill_chunk=prefill_chunk
        )
        self._scheduler = scheduler
        self._batch_loop = self._mlx.submit(scheduler.run)
        return scheduler

    def plan_slots(
        self,
        *,
        slots: int,
        prompts: list[tuple[str, str]],
        output_tokens: int,
        memory_mb: int | None,
    ) -> SlotPlan:
        """The KV-cache budget for `slots` rows at the longest (system, user) prompt."""
        return self.run(self._plan_slots, slots, prompts, output_tokens, memory_mb)

    def _plan_slots(
        self,
        slots: int,
        prompts: list[tuple[str, str]],
        output_tokens: int,
        memory_mb: int | None,
    ) -> SlotPlan:
        if self.model is None or self.loaded is None:
            raise ModelLoadFailed("plan_slots() before load()")
        tokenizer = self.processor.tokenizer
        text_tokens = max(
            len(tokenizer.encode(generation.build_prompt(self.model, self.processor, sys_, user)))
            for sys_, user in prompts
        )
        geometry = self.loaded.geometry
        metal_free = None
        if blas.describe_runtime().get("metal"):
            info = mx.metal.device_info()
            metal_free = int(info["max_recommended_working_set_size"]) - mx.get_active_memory()
        budget, source = slots_module.memory_budget(memory_mb, metal_free_bytes=metal_free)
        dtype_bytes = self.model.language_model.model.embed_tokens.weight.dtype.size
        return slots_module.plan_slots(
            slots=slots,
            text_config=self.model.config.text_config,
            dtype_bytes=dtype_bytes,
            prompt_tokens=text_tokens + geometry.max_pixels // geometry.factor**2,
            output_tokens=output_tokens,
            budget_bytes=budget,
            budget_source=source,
        )

    def _load(self, warmup: bool, schema: dict[str, Any]) -> LoadedVariant:
        started = time.perf_counter()
        try:
            model, processor = mlx_vlm_load(self.variant.base_model)
        except Exception as exc:  # noqa: BLE001 - any loader failure means we must not start
            raise ModelLoadFailed(
                f"Cannot load base model {self.variant.base_model!r}: {exc}. Check "
                "ADVISOR_BASE_MODEL (a local directory or a cached hub id)"
            ) from exc
        if not blas.describe_runtime().get("metal"):
            # Only fp32 is fast on the CPU backend; quantized layers keep their packing.
            model.set_dtype(mx.float32)
        fingerprint = None
        if self.variant.adapter_dir is not None:
            from advisor_worker import lora

            fingerprint = lora.apply_verified(model, processor, self.variant)
        geometry = generation.model_geometry(
            processor, self.model_image_pixels, chosen=self.pixels_chosen
        )
        self.model, self.processor = model, processor
        load_seconds = time.perf_counter() - started
        warm = 0.0
        if warmup:
            # First generation JIT-compiles kernels; pay that before the first real job.
            t0 = time.perf_counter()
            batching.generate_json(
                model,
                processor,
                Image.new("RGB", (64, 64), (128, 96, 64)),
                "Warm up.",
                "Describe the image.",
                schema,
                max_tokens=8,
                temperature=0.0,
            )
            warm = time.perf_counter() - t0
        return LoadedVariant(
            self.variant.name,
            self.variant.base_model,
            fingerprint,
            load_seconds,
            warm,
            {**blas.describe_runtime(), "dtype": weights_dtype(model)},
            geometry,
        )

    def close(self) -> None:
        """Release MLX streams on their own thread, else the process aborts at exit."""
        if self._scheduler is not None and self._batch_loop is not None:
            # The scheduler finishes the rows it holds, then gives the MLX thread back.
            self._scheduler.stop()
            self._batch_loop.result()
            self._scheduler = self._batch_loop = None
        try:
            self.run(mx.clear_streams)
        finally:
            self._mlx.shutdown(wait=True)
