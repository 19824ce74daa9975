"""The batched prefill correction: each row and each chunk gets its own deepstack features.

Two tests pin mlx-vlm 0.7.10's own behaviour; when either fails, upstream has changed and
advisor_worker.prefill may be dropped (check that the exactness tests still pass without it).
"""

from __future__ import annotations

import importlib
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from advisor_worker import prefill
from advisor_worker.generation import embed_prompt

_ar = importlib.import_module("mlx_vlm.generate.ar")
_generate_package = importlib.import_module("mlx_vlm.generate")

# Different image sizes: rows with different image-token counts.
SIZES = [(224, 224), (224, 160), (320, 96), (128, 256)]
WHOLE = 4096


def noise(seed: int, size: tuple[int, int]) -> Image.Image:
    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def rows(tiny_model: tuple[Any, Any]) -> list[tuple[list[int], dict[str, Any]]]:
    model, processor = tiny_model
    return [
        embed_prompt(model, processor, noise(i, size), "System.", "Critique.")
        for i, size in enumerate(SIZES)
    ]


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlx-vlm's own merge and prompt batch, for this test only."""
    monkeypatch.setattr(_ar, "_merge_prefill_prompt_kwargs", prefill.upstream_merge)
    monkeypatch.setattr(_generate_package, "PromptProcessingBatch", _ar.PromptProcessingBatch)


class _Capture:
    """Records the first-token logits of its row (a logits processor that changes nothing)."""

    def __init__(self) -> None:
        self.logits: mx.array | None = None

    def __call__(self, _tokens: mx.array, logits: mx.array) -> mx.array:
        if self.logits is None:
            self.logits = logits
        return logits

    def process_last_token(self, _token: int, logits: mx.array) -> mx.array:
        return logits


def first_logits(
    tiny_model: tuple[Any, Any], batch: list[tuple[list[int], dict[str, Any]]], chunk: int
) -> list[mx.array]:
    """Each row's first-token logits after one prefill of `batch` in chunks of `chunk`."""
    model, processor = tiny_model
    generator = _ar.BatchGenerator(
        model.language_model, processor, completion_batch_size=len(batch),
        prefill_batch_size=len(batch), prefill_step_size=chunk, compute_logprobs=False,
    )  # fmt: skip
    captures = [_Capture() for _ in batch]
    generator.insert([ids for ids, _ in batch], max_tokens=1,
                     prompt_kwargs=[kwargs for _, kwargs in batch],
                     logits_processors=[[c] for c in captures])  # fmt: skip
    try:
        while any(c.logits is None for c in captures):
            generator.next()
    finally:
        generator.close()
    return [c.logits.reshape(-1) for c in captures if c.logits is not None]


def max_difference(a: list[mx.array], b: list[mx.array]) -> float:
    return max(float(mx.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def test_upstream_merge_still_keeps_only_the_first_rows_deepstack_features(
    rows: list[tuple[list[int], dict[str, Any]]],
) -> None:
    ids = [i for i, _ in rows]
    kwargs = [k for _, k in rows]
    counts = [int(k[prefill.DEEPSTACK_KEY][0].shape[0]) for k in kwargs]
    assert len(set(counts)) > 1

    _, theirs = prefill.upstream_merge(kwargs, ids)
    _, ours = prefill.merge_prefill_prompt_kwargs(kwargs, ids)

    # Fails once mlx-vlm merges every row: then this correction can go.
    assert [int(layer.shape[0]) for layer in theirs[prefill.DEEPSTACK_KEY]] == [counts[0]] * len(
        kwargs[0][prefill.DEEPSTACK_KEY]
    )
    assert [int(layer.shape[0]) for layer in ours[prefill.DEEPSTACK_KEY]] == [sum(counts)] * len(
        kwargs[0][prefill.DEEPSTACK_KEY]
    )


@pytest.mark.usefixtures("upstream")
def test_upstream_chunked_prefill_still_changes_a_rows_logits(
    tiny_model: tuple[Any, Any], rows: list[tuple[list[int], dict[str, Any]]]
) -> None:
    # Fails once mlx-vlm slices deepstack features per chunk and merges every row.
    single = [first_logits(tiny_model, [row], WHOLE)[0] for row in rows]
    assert max_difference(first_logits(tiny_model, rows[:1], 16), single[:1]) > 1e-3
    assert max_difference(first_logits(tiny_model, rows, WHOLE), single) > 1e-3


@pytest.mark.parametrize("chunk", [WHOLE, 64, 16])
def test_a_four_row_mixed_size_prefill_matches_the_single_runs_at_any_chunk_size(
    tiny_model: tuple[Any, Any], rows: list[tuple[list[int], dict[str, Any]]], chunk: int
) -> None:
    prefill.install()
    single = [first_logits(tiny_model, [row], WHOLE)[0] for row in rows]
    together = first_logits(tiny_model, rows, chunk)

    # A few float32 ulps over 151,936 logits of magnitude ~1-5: 1.9e-6 was seen at chunks of
    # 16 and 64, with reference BLAS and with OpenBLAS.
    assert max_difference(together, single) <= 1e-5
