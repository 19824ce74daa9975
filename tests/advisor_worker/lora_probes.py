"""LoRA test helpers: an adapter's probe logits, their distance, an adapter's refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from safetensors.numpy import load_file, save_file

from advisor_worker import generation, lora
from advisor_worker.errors import AdapterInvalid


def adapted_logits(fresh: Any, adapter_dir: Path, model_dir: Path, serving: str = "unfused") -> Any:
    model, processor = fresh()
    lora.verify_and_apply(model, processor, adapter_dir, base_model=str(model_dir), serving=serving)
    return generation.probe_logits(model, processor)


def max_diff(a: Any, b: Any) -> float:
    return float(mx.abs(a - b).max())


def refusal(fresh: Any, adapter_dir: Path, model_dir: Path, serving: str = "unfused") -> str:
    model, processor = fresh()
    with pytest.raises(AdapterInvalid) as info:
        lora.verify_and_apply(
            model, processor, adapter_dir, base_model=str(model_dir), serving=serving
        )
    return str(info.value)


def rewrite_tensors(path: Path, change: Any) -> None:
    tensors = load_file(str(path))
    save_file(change(tensors), str(path))
