"""LoRA adapters on a loaded mlx-vlm model: check every tensor, apply (unfused or fused), verify.

Decisions:
- Module names resolve from the model root, else from `language_model` (mlx-vlm resolves
  config keys that way; mlx-lm files start at `model.layers`, which mlx_vlm.load ignores).
- Quantized base layers (nn.QuantizedLinear) are served unfused: LoRA layers over the packed
  weights, exact. `serving: fused` on them is refused: fusing means dequantize, add and
  re-quantize, which rounds the update away (upstream users reported broken fused models).
- A base-model name in the adapter config that differs from the variant's base model is a
  warning, not a refusal: names differ legitimately (`Qwen/Qwen3-VL-4B-Instruct` vs
  `mlx-community/Qwen3-VL-4B-Instruct-4bit`, local paths); the shapes decide.
- An adapter whose probe logits equal the base model's (a zero-B adapter) is refused:
  serving it would serve base under a fine-tuned name. No opt-out, as DESIGN.md says.
- mlx-lm's `num_layers` is not enforced: the tensors in the file say which modules to adapt.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

from advisor_worker import generation
from advisor_worker.adapter_format import (
    Adapter,
    LoraWeights,
    adapter_fingerprint,
    listing,
    read_adapter,
)
from advisor_worker.errors import AdapterInvalid
from jobs.variants import Variant

logger = logging.getLogger(__name__)

__all__ = [
    "MIN_PROBE_EFFECT",
    "AdapterReport",
    "LoRALinear",
    "adapter_fingerprint",
    "apply_adapter",
    "apply_verified",
    "read_adapter",
    "verify_and_apply",
]

# Max |logit change| on the probe below which an adapter counts as having no effect; far
# below any trained adapter's effect, above nothing but rounding.
MIN_PROBE_EFFECT = 1e-5
_QUANT_SUFFIX = re.compile(r"(-(\d+bit|bf16|fp16|fp32|mlx|dwq|awq|gptq))+$")


class LoRALinear(nn.Module):
    """linear(x) + (x @ lora_a) @ lora_b, the scale folded into lora_b; wraps quantized layers."""

    def __init__(self, linear: nn.Module, lora_a: mx.array, lora_b: mx.array) -> None:
        super().__init__()
        self.linear = linear
        self.lora_a = lora_a
        self.lora_b = lora_b

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear(x) + ((x @ self.lora_a) @ self.lora_b).astype(x.dtype)


@dataclass(frozen=True)
class AdapterReport:
    """What apply_verified did, for the startup log and `advisor-worker check`."""

    fingerprint: str
    format: str
    serving: str
    modules: int
    tensors: int
    probe_effect: float
    warnings: tuple[str, ...]


def apply_adapter(model: nn.Module, adapter: Adapter, *, serving: str = "unfused") -> int:
    """Check every tensor against the model, then apply all of them; returns tensors applied.

    Refuses (AdapterInvalid, every problem listed) before changing anything.
    """
    if serving not in ("unfused", "fused"):
        raise AdapterInvalid(f"serving must be 'unfused' or 'fused', got {serving!r}")
    modules = dict(model.named_modules())
    linear = [n for n, m in modules.items() if isinstance(m, nn.Linear | nn.QuantizedLinear)]
    plan: list[tuple[str, nn.Module, LoraWeights]] = []
    problems: list[str] = []
    for lw in adapter.layers:
        path = next((p for p in (lw.module, f"language_model.{lw.module}") if p in modules), None)
        if path is None:
            near = difflib.get_close_matches(lw.module, linear, n=1)
            hint = f" (nearest: {near[0]!r})" if near else ""
            problems.append(f"{lw.a_key}: no module {lw.module!r} in the loaded model{hint}")
            continue
        problem = _check_module(path, modules[path], lw, adapter.format, serving)
        if problem:
            problems.append(problem)
        else:
            plan.append((path, modules[path], lw))
    if problems:
        raise AdapterInvalid(listing(f"Adapter {adapter.weights_file} does not fit", problems))

    placed: dict[str, Any] = {}  # path -> the new LoRALinear (unfused) or weight (fused)
    for path, module, lw in plan:
        if serving == "fused":
            # W + scale * (a @ b)^T, added in float32 and cast back to the layer's dtype.
            delta = lw.scale * (lw.b.T @ lw.a.T).astype(mx.float32)
            module.weight = (module.weight.astype(mx.float32) + delta).astype(module.weight.dtype)
            placed[path] = module.weight
        else:
            dtype = _compute_dtype(module)
            lora_b = (lw.scale * lw.b.astype(mx.float32)).astype(dtype)
            placed[path] = LoRALinear(module, lw.a.astype(dtype), lora_b)
    if serving == "unfused" and placed:
        model.update_modules(tree_unflatten(list(placed.items())))
    mx.eval(model.parameters())
    # Re-read each module from the model: counts what inference will actually use.
    after = dict(model.named_modules())
    in_use = [after.get(p) if serving == "unfused" else after[p].weight for p in placed]
    return 2 * sum(used is new for used, new in zip(in_use, placed.values(), strict=True))


def verify_and_apply(
    model: nn.Module,
    processor: Any,
    adapter_dir: Path,
    *,
    base_model: str,
    serving: str = "unfused",
    expected_fingerprint: str | None = None,
) -> AdapterReport:
    """Read, check, apply and prove the adapter changes the model's output on the probe.

    Refusals before applying leave the model untouched; a "no effect" refusal comes after,
    and the caller must not serve that model (the worker exits).
    """
    adapter = read_adapter(adapter_dir)
    if expected_fingerprint is not None and adapter.fingerprint != expected_fingerprint:
        raise AdapterInvalid(
            f"Adapter {adapter_dir} has fingerprint {adapter.fingerprint}, but the registry pins "
            f"{expected_fingerprint}: its files changed since it was pinned"
        )
    warnings = _base_model_warnings(adapter, base_model)
    for warning in warnings:
        logger.warning("%s", warning)
    before = generation.probe_logits(model, processor)
    applied = apply_adapter(model, adapter, serving=serving)
    if applied != adapter.tensor_count:
        raise AdapterInvalid(
            f"Adapter {adapter.weights_file}: applied {applied} of {adapter.tensor_count} tensors"
        )
    after = generation.probe_logits(model, processor)
    effect = float(mx.abs(after - before).max())
    if not math.isfinite(effect):
        raise AdapterInvalid(
            f"Adapter {adapter.weights_file}: the adapted model's logits are not finite"
        )
    if effect < MIN_PROBE_EFFECT:
        zero_b = all(not bool(mx.any(lw.b != 0)) for lw in adapter.layers)
        raise AdapterInvalid(
            f"Adapter {adapter.weights_file} has no effect: the adapted model's probe logits "
            f"equal the base model's (max |diff| {effect:.1e})"
            + ("; every B matrix is zero (an untrained adapter)" if zero_b else "")
            + ". Refusing to serve the base model under a fine-tuned name"
        )
    return AdapterReport(
        adapter.fingerprint,
        adapter.format,
        serving,
        len(adapter.layers),
        applied,
        effect,
        tuple(warnings),
    )


def apply_verified(model: nn.Module, processor: Any, variant: Variant) -> str:
    """Apply the variant's adapter after verifying it; returns its fingerprint."""
    if variant.adapter_dir is None:
        raise AdapterInvalid(f"Variant {variant.name!r} has no adapter directory")
    report = verify_and_apply(
        model,
        processor,
        variant.adapter_dir,
        base_model=variant.base_model,
        serving=variant.serving,
        expected_fingerprint=variant.fingerprint,
    )
    logger.info(
        "Variant %r: %s adapter %s applied %s (%d modules, %d tensors, probe effect %.3g), "
        "fingerprint %s",
        variant.name,
        report.format,
        variant.adapter_dir,
        report.serving,
        report.modules,
        report.tensors,
        report.probe_effect,
        report.fingerprint,
    )
    return report.fingerprint


def _check_module(path: str, module: nn.Module, lw: LoraWeights, fmt: str, serving: str) -> str:
    if isinstance(module, LoRALinear):
        return f"{lw.a_key}: {path} already carries an adapter"
    if not isinstance(module, nn.Linear | nn.QuantizedLinear):
        return f"{lw.a_key}: {path} is a {type(module).__name__}, not a Linear layer"
    out_dims, in_dims = module.weight.shape
    if isinstance(module, nn.QuantizedLinear):
        in_dims = in_dims * 32 // module.bits
    rank = lw.a.shape[1]
    if lw.a.shape[0] != in_dims or lw.b.shape[1] != out_dims:
        want = (
            ((rank, in_dims), (out_dims, rank))
            if fmt == "peft"
            else ((in_dims, rank), (rank, out_dims))
        )
        return (
            f"{lw.a_key} / {lw.b_key}: shapes {lw.file_shapes[0]} / {lw.file_shapes[1]} do not fit "
            f"{path} (in {in_dims}, out {out_dims}), which needs {want[0]} / {want[1]}: an "
            "adapter for another base model"
        )
    if serving == "fused" and isinstance(module, nn.QuantizedLinear):
        return (
            f"{path} is {module.bits}-bit quantized: fusing would dequantize, add and re-quantize, "
            "which loses the update; serve this variant 'unfused' or use a float base model"
        )
    return ""


def _compute_dtype(module: nn.Module) -> mx.Dtype:
    return module.scales.dtype if isinstance(module, nn.QuantizedLinear) else module.weight.dtype


def _base_model_warnings(adapter: Adapter, base_model: str) -> list[str]:
    if adapter.base_model is None or _model_id(adapter.base_model) == _model_id(base_model):
        return []
    return [
        f"Adapter {adapter.directory} was made for {adapter.base_model!r}, served on "
        f"{base_model!r}; the shapes fit, so it is served (check it is the same model)"
    ]


def _model_id(name: str) -> str:
    """Last path part, lowercased, quantization suffixes dropped: comparable across hubs."""
    return _QUANT_SUFFIX.sub("", name.rstrip("/").rsplit("/", 1)[-1].lower())
