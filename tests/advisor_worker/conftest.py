"""Worker fixtures: the tiny Qwen3-VL checkpoint (tests/conftest.py) loaded once per process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from advisor_worker.blas import load_openblas

# Nothing can be downloaded here; fail fast instead of trying the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Before any test module imports mlx.core: in-process MLX runs on OpenBLAS, as the worker
# does. With reference BLAS, the tiny model's 151,936-row head made each step ~10x slower.
load_openblas()


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> Iterator[tuple[Any, Any]]:
    """(model, processor) from mlx_vlm.load; all MLX work stays on pytest's main thread."""
    import mlx.core as mx
    from mlx_vlm import load

    yield load(str(tiny_model_dir))
    # MLX aborts at exit if streams outlive the thread that made them.
    mx.clear_streams()


@pytest.fixture(scope="session")
def mlx_streams() -> Iterator[None]:
    yield
    import mlx.core as mx

    # MLX aborts at exit if streams outlive the thread that made them.
    mx.clear_streams()


@pytest.fixture(scope="module")
def processor(tiny_model_dir: Path, mlx_streams: None) -> Any:
    """The tokenizer and image processor, loaded once: an adapter changes the model only (and a
    load of Qwen's 151,669-token tokenizer costs more CPU than the tiny model's weights)."""
    from mlx_vlm import load

    return load(str(tiny_model_dir))[1]


@pytest.fixture
def fresh(tiny_model_dir: Path, processor: Any) -> Any:
    """A loader of new (model, processor) pairs: applying an adapter changes the model in place."""
    import mlx.core as mx
    from mlx_vlm.utils import load_model

    def _load() -> tuple[Any, Any]:
        model = load_model(tiny_model_dir)
        model.set_dtype(mx.float32)  # as the provider does on the CPU
        return model, processor

    return _load


@pytest.fixture
def base_logits(fresh: Any) -> Any:
    from advisor_worker import generation

    return generation.probe_logits(*fresh())
