"""Adapter directories in mlx-vlm's and PEFT's formats: files, fingerprint, parsed tensors.

- mlx-vlm `adapters.safetensors`: with `lora_parameters: {rank, scale, keys}` (mlx-vlm's
  trainer, mlx-lm) tensors are `<module>.lora_a` (in, r) / `.lora_b` (r, out) and the
  update is scale * x @ a @ b; with flat `{rank, alpha, dropout}` (mlx-vlm's legacy trainer)
  they are `<module>.A` / `.B` and scale = alpha / rank, as mlx-vlm's own layers compute.
- PEFT `adapter_model.safetensors`: `base_model.model.<HF module>.lora_A.weight` (r, in)
  and `.lora_B.weight` (out, r); scale = lora_alpha / r, or / sqrt(r) with `use_rslora`;
  `rank_pattern` / `alpha_pattern` honoured. HF names map as mlx-vlm's sanitize maps the base.
The weights file's name decides the format; the config must then match it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx

from advisor_worker.errors import AdapterInvalid

__all__ = [
    "CONFIG_FILE",
    "MLX_WEIGHTS",
    "PEFT_WEIGHTS",
    "Adapter",
    "LoraWeights",
    "adapter_files",
    "adapter_fingerprint",
    "listing",
    "read_adapter",
]

CONFIG_FILE = "adapter_config.json"
MLX_WEIGHTS = "adapters.safetensors"
PEFT_WEIGHTS = "adapter_model.safetensors"
MAX_LISTED = 12
# Hugging Face Qwen-VL module names -> mlx-vlm's, first match wins (as qwen*_vl sanitize maps).
_HF_TO_MLX = (
    ("model.language_model.", "language_model.model."),
    ("model.visual.", "vision_tower."),
    ("visual.", "vision_tower."),
    ("lm_head", "language_model.lm_head"),
    ("model.", "language_model.model."),  # older Qwen2-VL layout: model.layers.N
)
_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraWeights:
    """One adapted module: a (in, r) and b (r, out) in mlx-vlm's layout, plus its scale."""

    module: str
    a: mx.array
    b: mx.array
    scale: float
    a_key: str
    b_key: str
    file_shapes: tuple[tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class Adapter:
    """A parsed adapter directory, not yet matched to a model."""

    directory: Path
    format: str  # "mlx-vlm", "mlx-vlm-flat" or "peft"
    weights_file: Path
    tensor_count: int
    layers: tuple[LoraWeights, ...]
    base_model: str | None
    fingerprint: str


def adapter_files(adapter_dir: Path) -> tuple[Path, Path]:
    """(config, weights) of an adapter directory; refuses missing or ambiguous files."""
    d = Path(adapter_dir)
    if not d.is_dir():
        raise AdapterInvalid(f"Adapter directory {d} does not exist")
    present = [d / name for name in (MLX_WEIGHTS, PEFT_WEIGHTS) if (d / name).is_file()]
    if not present:
        pickle = " (adapter_model.bin is a pickle: save it as safetensors)"
        raise AdapterInvalid(
            f"Adapter {d}: no weights file; expected {MLX_WEIGHTS} (mlx-vlm) or "
            f"{PEFT_WEIGHTS} (PEFT)" + (pickle if (d / "adapter_model.bin").exists() else "")
        )
    if len(present) > 1:
        raise AdapterInvalid(
            f"Adapter {d}: both {MLX_WEIGHTS} and {PEFT_WEIGHTS}; keep one so the served "
            "weights are unambiguous"
        )
    if not (d / CONFIG_FILE).is_file():
        raise AdapterInvalid(f"Adapter {d}: {CONFIG_FILE} is missing (it carries rank and scale)")
    return d / CONFIG_FILE, present[0]


def adapter_fingerprint(adapter_dir: Path) -> str:
    """sha256 over adapter_config.json's bytes, then the weights file's bytes.

    The same as `cat adapter_config.json adapters.safetensors | sha256sum`.
    """
    digest = hashlib.sha256()
    for path in adapter_files(adapter_dir):
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_adapter(adapter_dir: Path) -> Adapter:
    """Parse an adapter directory; the fingerprint covers exactly the bytes parsed."""
    config_path, weights_path = adapter_files(adapter_dir)
    config_bytes, weights_bytes = config_path.read_bytes(), weights_path.read_bytes()
    fingerprint = hashlib.sha256(config_bytes + weights_bytes).hexdigest()
    try:
        config = json.loads(config_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterInvalid(f"{config_path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise AdapterInvalid(f"{config_path}: expected a JSON object")
    tensors = _load_tensors(weights_path, weights_bytes)
    if weights_path.name == PEFT_WEIGHTS:
        fmt, layers = "peft", _peft_layers(config, config_path, tensors)
        base = config.get("base_model_name_or_path")
    else:
        fmt, layers = _mlx_layers(config, config_path, tensors)
        base = config.get("model") or config.get("base_model")
    return Adapter(
        Path(adapter_dir),
        fmt,
        weights_path,
        len(tensors),
        tuple(layers),
        str(base) if base else None,
        fingerprint,
    )


def _load_tensors(path: Path, data: bytes) -> dict[str, mx.array]:
    try:
        tensors = mx.load(io.BytesIO(data), format="safetensors")
        assert isinstance(tensors, dict)
        # Loading is lazy: evaluate now so a truncated file fails here, not mid-inference.
        mx.eval(list(tensors.values()))
    except (RuntimeError, ValueError) as exc:
        raise AdapterInvalid(f"{path}: not a readable safetensors file ({exc})") from exc
    if not tensors:
        raise AdapterInvalid(f"{path}: holds no tensors (an empty adapter)")
    for key, value in tensors.items():
        if value.ndim != 2 or not mx.issubdtype(value.dtype, mx.floating):
            raise AdapterInvalid(
                f"{path}: {key} is {value.dtype} {value.shape}, not a float matrix"
            )
        if not bool(mx.all(mx.isfinite(value))):
            raise AdapterInvalid(f"{path}: {key} holds NaN or infinite values")
    return tensors


def _mlx_layers(
    config: dict[str, Any], config_path: Path, tensors: dict[str, mx.array]
) -> tuple[str, list[LoraWeights]]:
    fine_tune_type = config.get("fine_tune_type", "lora")
    if fine_tune_type != "lora":
        what = "a full fine-tune, not an adapter" if fine_tune_type == "full" else "not LoRA"
        raise AdapterInvalid(f"{config_path}: fine_tune_type {fine_tune_type!r} is {what}")
    params = config.get("lora_parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise AdapterInvalid(f"{config_path}: 'lora_parameters' must be an object")
        rank = _positive_int(params.get("rank"), config_path, "lora_parameters.rank")
        if "scale" in params:
            scale = _number(params["scale"], config_path, "lora_parameters.scale")
        elif "alpha" in params:
            scale = _number(params["alpha"], config_path, "lora_parameters.alpha") / rank
        else:
            raise AdapterInvalid(f"{config_path}: lora_parameters has neither 'scale' nor 'alpha'")
        keys = params.get("keys")
        if keys is not None and not (
            isinstance(keys, list) and all(isinstance(k, str) for k in keys)
        ):
            raise AdapterInvalid(f"{config_path}: lora_parameters.keys must be a list of names")
        fmt, suffixes = "mlx-vlm", ("lora_a", "lora_b")
    elif "rank" in config:
        rank = _positive_int(config["rank"], config_path, "rank")
        # mlx-vlm's legacy LoRaLayer: scale = alpha / rank, alpha defaulting to 0.1.
        scale = _number(config.get("alpha", 0.1), config_path, "alpha") / rank
        keys, fmt, suffixes = None, "mlx-vlm-flat", ("A", "B")
    else:
        raise AdapterInvalid(
            f"{config_path}: neither 'lora_parameters' (mlx-vlm trainer, mlx-lm) nor a flat "
            "'rank' (mlx-vlm legacy trainer)"
        )
    pairs, problems = _pair(tensors, lambda key: _split_suffix(key, suffixes))
    layers = []
    for module, (a_key, b_key) in pairs.items():
        if keys is not None and not _listed(module, keys):
            problems.append(f"{a_key}: module {module!r} is not in lora_parameters.keys")
            continue
        a, b = tensors[a_key], tensors[b_key]
        problems += _rank_problems(a_key, a.shape[1], b_key, b.shape[0], rank, config_path)
        layers.append(LoraWeights(module, a, b, scale, a_key, b_key, (a.shape, b.shape)))
    if problems:
        raise AdapterInvalid(listing(f"Adapter {config_path.parent} ({fmt})", problems))
    return fmt, layers


def _peft_layers(
    config: dict[str, Any], config_path: Path, tensors: dict[str, mx.array]
) -> list[LoraWeights]:
    for field, bad, why in (
        ("peft_type", lambda v: v not in (None, "LORA"), "only LoRA is supported"),
        ("use_dora", bool, "DoRA is not supported"),
        ("fan_in_fan_out", bool, "fan_in_fan_out (Conv1D models) is not supported"),
    ):
        if bad(config.get(field)):
            raise AdapterInvalid(f"{config_path}: {field}={config.get(field)!r}: {why}")
    rank = _positive_int(config.get("r"), config_path, "r")
    alpha = _number(config.get("lora_alpha", 8), config_path, "lora_alpha")  # PEFT's default
    rslora = bool(config.get("use_rslora", False))
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    targets = config.get("target_modules")
    pairs, problems = _pair(tensors, _split_peft)
    layers = []
    for hf_module, (a_key, b_key) in pairs.items():
        if not _peft_targets(hf_module, targets):
            problems.append(f"{a_key}: module {hf_module!r} is not in target_modules {targets}")
            continue
        r = _positive_int(_pattern(rank_pattern, hf_module, rank), config_path, "rank_pattern")
        a_alpha = _number(_pattern(alpha_pattern, hf_module, alpha), config_path, "alpha_pattern")
        a, b = tensors[a_key], tensors[b_key]  # (r, in), (out, r)
        problems += _rank_problems(a_key, a.shape[0], b_key, b.shape[1], r, config_path)
        scale = a_alpha / math.sqrt(r) if rslora else a_alpha / r
        module = _mlx_module_name(hf_module)
        layers.append(LoraWeights(module, a.T, b.T, scale, a_key, b_key, (a.shape, b.shape)))
    if problems:
        raise AdapterInvalid(listing(f"Adapter {config_path.parent} (PEFT)", problems))
    return layers


def _split_suffix(key: str, suffixes: tuple[str, str]) -> tuple[str, int] | str:
    module, _, last = key.rpartition(".")
    if module and last in suffixes:
        return module, suffixes.index(last)
    return f"{key}: not a LoRA tensor (expected names ending in .{suffixes[0]} / .{suffixes[1]})"


def _split_peft(key: str) -> tuple[str, int] | str:
    if not key.startswith(_PEFT_PREFIX):
        return f"{key}: not a PEFT key (expected the prefix {_PEFT_PREFIX!r})"
    name = key.removeprefix(_PEFT_PREFIX)
    for suffix, which in ((".lora_A.weight", 0), (".lora_B.weight", 1)):
        if name.endswith(suffix):
            return name.removesuffix(suffix), which
    return (
        f"{key}: not a LoRA A/B weight (embedding LoRA, DoRA, LoRA bias and "
        "modules_to_save are not supported)"
    )


def _pair(tensors: dict[str, mx.array], split: Any) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Group tensor names into module -> (a key, b key); problems for strays and halves."""
    halves: dict[str, list[str | None]] = {}
    problems: list[str] = []
    for key in sorted(tensors):
        parsed = split(key)
        if isinstance(parsed, str):
            problems.append(parsed)
        else:
            halves.setdefault(parsed[0], [None, None])[parsed[1]] = key
    pairs = {}
    for module, (a_key, b_key) in halves.items():
        if a_key is None or b_key is None:
            problems.append(
                f"{a_key or b_key}: its {'A' if a_key is None else 'B'} half is missing"
            )
        else:
            pairs[module] = (a_key, b_key)
    return pairs, problems


def _rank_problems(
    a_key: str, a_rank: int, b_key: str, b_rank: int, rank: int, config_path: Path
) -> list[str]:
    if a_rank == b_rank == rank:
        return []
    return [f"{a_key} has rank {a_rank} and {b_key} rank {b_rank}; {config_path.name} says {rank}"]


def _mlx_module_name(hf_module: str) -> str:
    for old, new in _HF_TO_MLX:
        if hf_module.startswith(old):
            return new + hf_module.removeprefix(old)
    return hf_module


def _listed(module: str, keys: Any) -> bool:
    """mlx-vlm lists full module names; mlx-lm lists names inside a decoder block."""
    return any(module == k or module.endswith(f".{k}") for k in keys)


def _peft_targets(hf_module: str, targets: Any) -> bool:
    """PEFT's rule: a string is a full-match regex (or all-linear), a list matches name suffixes."""
    if targets is None or targets == "all-linear":
        return True
    if isinstance(targets, str):
        return re.fullmatch(targets, hf_module) is not None
    return any(hf_module == t or hf_module.endswith(f".{t}") for t in targets)


def _pattern(patterns: dict[str, Any], hf_module: str, default: Any) -> Any:
    """PEFT's rank_pattern / alpha_pattern: a key matches the module name or its dotted suffix."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", hf_module):
            return value
    return default


def _positive_int(value: Any, config_path: Path, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AdapterInvalid(f"{config_path}: {field} must be a positive integer, got {value!r}")
    return value


def _number(value: Any, config_path: Path, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AdapterInvalid(f"{config_path}: {field} must be a finite number, got {value!r}")
    return float(value)


def listing(head: str, problems: list[str]) -> str:
    """One message listing every problem (the first few), so one run shows them all."""
    shown = problems[:MAX_LISTED]
    more = len(problems) - len(shown)
    return f"{head}:\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more else "")
