"""Writes seeded random LoRA adapters for a Qwen3-VL checkpoint (mlx-vlm or PEFT format), no MLX."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from safetensors.numpy import save_file

logger = logging.getLogger(__name__)

__all__ = ["ADAPTER_FORMATS", "TARGETS", "write_random_adapter"]

AdapterFormat = Literal["mlx", "mlx-flat", "mlx-lm", "peft"]
# mlx: mlx-vlm's trainer ({fine_tune_type, lora_parameters: {rank, scale, keys}}, full keys);
# mlx-flat: its legacy trainer ({rank, alpha, dropout}, tensors .A/.B); mlx-lm: block-relative
# keys plus num_layers; peft: Hugging Face PEFT.
ADAPTER_FORMATS: tuple[str, ...] = ("mlx", "mlx-flat", "mlx-lm", "peft")

# Target name -> (tower, module path inside one block); the tower decides the dimensions.
TARGETS: dict[str, tuple[str, str]] = {
    "q_proj": ("text", "self_attn.q_proj"),
    "k_proj": ("text", "self_attn.k_proj"),
    "v_proj": ("text", "self_attn.v_proj"),
    "o_proj": ("text", "self_attn.o_proj"),
    "gate_proj": ("text", "mlp.gate_proj"),
    "up_proj": ("text", "mlp.up_proj"),
    "down_proj": ("text", "mlp.down_proj"),
    "attn.qkv": ("vision", "attn.qkv"),
    "attn.proj": ("vision", "attn.proj"),
}

# Module prefixes per tower: (mlx-vlm name, Hugging Face name).
_PREFIXES = {
    "text": ("language_model.model.layers", "model.language_model.layers"),
    "vision": ("vision_tower.blocks", "model.visual.blocks"),
}
# B's standard deviation relative to 1/sqrt(rank): with A ~ N(0, 1/in) and the default
# scale alpha/rank = 2, the update is about half the base weight: a clear, sane effect.
_B_STD = 0.25


def write_random_adapter(
    model_dir: Path,
    out_dir: Path,
    *,
    fmt: AdapterFormat = "mlx",
    rank: int = 4,
    alpha: float = 8,
    seed: int = 0,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    zero_b: bool = False,
    layers: Iterable[int] | None = None,
    use_rslora: bool = False,
) -> Path:
    """Write a random LoRA adapter sized from `model_dir/config.json`; same arguments, same bytes.

    The tensors depend on (seed, rank, targets, layers) only, not on `fmt`, so the same seed in
    two formats gives the same adapter. `zero_b` writes B = 0 (a freshly initialised adapter,
    which has no effect). `layers` picks text decoder layers (default all); vision targets
    cover every vision block. `use_rslora` (PEFT only) sets scale alpha/sqrt(rank).
    """
    if fmt not in ADAPTER_FORMATS:
        raise ValueError(f"Unknown adapter format {fmt!r}; known: {list(ADAPTER_FORMATS)}")
    if rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank}")
    if use_rslora and fmt != "peft":
        raise ValueError("use_rslora is a PEFT option; use fmt='peft'")
    if fmt == "mlx-lm" and any(TARGETS.get(t, ("",))[0] == "vision" for t in targets):
        raise ValueError("mlx-lm adapters cover the language model only; drop the vision targets")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"Unknown or no targets {unknown}; known: {sorted(TARGETS)}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = json.loads((model_dir / "config.json").read_text())
    modules = _modules(config, targets, layers)

    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for mlx_name, hf_name, in_dims, out_dims in modules:
        # mlx-vlm layout: A (in, r), B (r, out); PEFT stores the transposes.
        a = (rng.standard_normal((in_dims, rank)) / np.sqrt(in_dims)).astype(np.float32)
        b = (rng.standard_normal((rank, out_dims)) * (_B_STD / np.sqrt(rank))).astype(np.float32)
        if zero_b:
            b = np.zeros_like(b)
        if fmt == "peft":
            tensors[f"base_model.model.{hf_name}.lora_A.weight"] = np.ascontiguousarray(a.T)
            tensors[f"base_model.model.{hf_name}.lora_B.weight"] = np.ascontiguousarray(b.T)
        elif fmt == "mlx-flat":
            tensors[f"{mlx_name}.A"], tensors[f"{mlx_name}.B"] = a, b
        elif fmt == "mlx-lm":
            # mlx-lm trains the language model alone, so its names start at `model.layers`.
            name = mlx_name.removeprefix("language_model.")
            tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"] = a, b
        else:
            tensors[f"{mlx_name}.lora_a"], tensors[f"{mlx_name}.lora_b"] = a, b

    out_dir.mkdir(parents=True, exist_ok=True)
    adapter_config = _config(fmt, model_dir, modules, targets, rank, alpha, use_rslora, config)
    weights_name = "adapter_model.safetensors" if fmt == "peft" else "adapters.safetensors"
    # Sorted keys and fixed metadata: the bytes (and so the fingerprint) depend on the arguments.
    save_file(dict(sorted(tensors.items())), str(out_dir / weights_name), {"format": "pt"})
    (out_dir / "adapter_config.json").write_text(
        json.dumps(adapter_config, indent=2, sort_keys=True) + "\n"
    )
    logger.info(
        "Wrote %s adapter (rank %d, %d modules, seed %d%s) to %s",
        fmt,
        rank,
        len(modules),
        seed,
        ", B = 0" if zero_b else "",
        out_dir,
    )
    return out_dir


def _modules(
    config: dict[str, Any], targets: Sequence[str], layers: Iterable[int] | None
) -> list[tuple[str, str, int, int]]:
    """(mlx name, HF name, in, out) per adapted module, in a fixed order."""
    text, vision = config["text_config"], config["vision_config"]
    h, head_dim = text["hidden_size"], text["head_dim"]
    q, kv = text["num_attention_heads"] * head_dim, text["num_key_value_heads"] * head_dim
    inter, vh = text["intermediate_size"], vision["hidden_size"]
    dims = {  # module -> (in, out), as the Linear layers of Qwen3-VL are built
        "self_attn.q_proj": (h, q),
        "self_attn.k_proj": (h, kv),
        "self_attn.v_proj": (h, kv),
        "self_attn.o_proj": (q, h),
        "mlp.gate_proj": (h, inter),
        "mlp.up_proj": (h, inter),
        "mlp.down_proj": (inter, h),
        "attn.qkv": (vh, 3 * vh),
        "attn.proj": (vh, vh),
    }
    n_layers = text["num_hidden_layers"]
    text_layers = sorted(set(range(n_layers) if layers is None else layers))
    if any(not 0 <= i < n_layers for i in text_layers):
        raise ValueError(f"layers {text_layers} out of range: the model has {n_layers}")
    blocks = {"text": text_layers, "vision": list(range(vision["depth"]))}
    out = []
    for target in targets:
        tower, path = TARGETS[target]
        mlx_prefix, hf_prefix = _PREFIXES[tower]
        for i in blocks[tower]:
            out.append((f"{mlx_prefix}.{i}.{path}", f"{hf_prefix}.{i}.{path}", *dims[path]))
    return out


def _config(
    fmt: str,
    model_dir: Path,
    modules: list[tuple[str, str, int, int]],
    targets: Sequence[str],
    rank: int,
    alpha: float,
    use_rslora: bool,
    model_config: dict[str, Any],
) -> dict[str, Any]:
    """adapter_config.json in the shape each tool writes."""
    if fmt == "peft":
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": str(model_dir),
            "r": rank,
            "lora_alpha": alpha,
            "lora_dropout": 0.0,
            "use_rslora": use_rslora,
            "use_dora": False,
            "bias": "none",
            "fan_in_fan_out": False,
            "target_modules": sorted({TARGETS[t][1].rsplit(".", 1)[-1] for t in targets}),
            "rank_pattern": {},
            "alpha_pattern": {},
            "modules_to_save": None,
            "inference_mode": True,
        }
    if fmt == "mlx-flat":
        return {"rank": rank, "alpha": alpha, "dropout": 0.0}
    if fmt == "mlx-lm":
        # mlx-lm names keys relative to a decoder block and adapts the last num_layers blocks.
        return {
            "fine_tune_type": "lora",
            "model": str(model_dir),
            "num_layers": model_config["text_config"]["num_hidden_layers"],
            "lora_parameters": {
                "rank": rank,
                "scale": alpha / rank,
                "dropout": 0.0,
                "keys": sorted({TARGETS[t][1] for t in targets}),
            },
        }
    return {
        "fine_tune_type": "lora",
        "num_layers": -1,
        "lora_parameters": {
            "rank": rank,
            "scale": alpha / rank,
            "dropout": 0.0,
            "keys": [mlx_name for mlx_name, _, _, _ in modules],
        },
    }
