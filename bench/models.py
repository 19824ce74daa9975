"""Random-weight Qwen3-VL checkpoints for benchmarks, built once per work directory."""

from __future__ import annotations

from pathlib import Path

from advisor_worker.devtools.tiny_model import build_tiny_model, parameter_count


def ensure_model(workdir: Path, size: str) -> Path:
    """The checkpoint of `size` ("tiny": ~0.35M parameters, "medium": ~163M) under workdir."""
    path = workdir / f"model-{size}"
    if not (path / "model.safetensors").exists():
        build_tiny_model(path, seed=0, size=size)
    return path


def disk_mib(model_dir: Path) -> float:
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 1024**2


def label(model_dir: Path, size: str) -> str:
    return f"{size} ({parameter_count(model_dir) / 1e6:.2f}M params)"
