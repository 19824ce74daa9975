"""Batched prefill: each row keeps its own deepstack features (a correction of mlx-vlm 0.7.10).

mlx-vlm 0.7.10's `mlx_vlm.generate.ar._merge_prefill_prompt_kwargs` batches per-row prompt
kwargs for a multi-row prefill, but `deepstack_visual_embeds` is a list (one array per
deepstack layer), not an array, so it keeps the first row's list only. Qwen3-VL's
`_deepstack_process` then finds too few features for rows 2..n and silently skips their
deepstack injection: a batch of mixed image sizes changes every row's text but the first.

The correction: after upstream's merge, concatenate each row's features layer by layer in
row order (the order `_deepstack_process` walks them).

The same list is not sliced per chunk either: `PromptProcessingBatch.prompt_step` slices
`visual_pos_masks` to each chunk but hands every chunk the whole feature list, so a chunked
prefill (even of one row) adds the first features to whichever image tokens a later chunk
holds. `RowwisePromptBatch` passes each chunk only the features of its own image tokens.

tests/advisor_worker/test_prefill.py pins both upstream behaviours; once upstream keeps
every row and slices per chunk, drop this module.
"""

from __future__ import annotations

import importlib
from typing import Any

import mlx.core as mx
import numpy as np

__all__ = [
    "DEEPSTACK_KEY",
    "RowwisePromptBatch",
    "install",
    "merge_prefill_prompt_kwargs",
    "upstream_merge",
]

# `mlx_vlm.generate` is also a function the package re-exports; import the module itself.
_ar = importlib.import_module("mlx_vlm.generate.ar")

DEEPSTACK_KEY = "deepstack_visual_embeds"
_MASK_KEY = "visual_pos_masks"
_generate_package = importlib.import_module("mlx_vlm.generate")
# Kept before install() replaces it, so the pinning test can call upstream's own merge.
upstream_merge = _ar._merge_prefill_prompt_kwargs
_UpstreamPromptBatch: Any = _ar.PromptProcessingBatch


def merge_prefill_prompt_kwargs(
    prompt_kwargs_list: list[dict[str, Any] | None], input_ids: list[list[int]]
) -> tuple[mx.array, dict[str, Any]]:
    """Upstream's merge, with every row's deepstack features instead of the first row's."""
    inputs_embeds, merged = upstream_merge(prompt_kwargs_list, input_ids)
    rows = [kw[DEEPSTACK_KEY] for kw in prompt_kwargs_list if kw and kw.get(DEEPSTACK_KEY)]
    if len(rows) > 1:
        layers = len(rows[0])
        if any(len(row) != layers for row in rows):
            raise ValueError("Rows of one prefill batch differ in deepstack layer count")
        merged[DEEPSTACK_KEY] = [
            mx.concatenate([row[layer] for row in rows], axis=0) for layer in range(layers)
        ]
    return inputs_embeds, merged


class RowwisePromptBatch(_UpstreamPromptBatch):  # type: ignore[misc]
    """mlx-vlm's prompt batch, handing each prefill chunk only its own deepstack features."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        features = self._prompt_kwargs.get(DEEPSTACK_KEY)
        mask = self._prompt_kwargs.get(_MASK_KEY)
        self._deepstack: list[mx.array] | None = None
        self._columns: np.ndarray | None = None
        # Left-padded rows only: right padding (APC's mixed batches) moves chunk bounds.
        if features is not None and mask is not None and self._right_pad_per_row is None:
            self._deepstack = list(features)
            # Row-major, as the merged features are: row 0's image tokens, then row 1's...
            self._columns = np.nonzero(np.array(mask))[1]

    def _select(self, start: int, stop: int) -> None:
        if self._deepstack is None or self._columns is None:
            return
        chosen = np.flatnonzero((self._columns >= start) & (self._columns < stop))
        indices = mx.array(chosen.astype(np.uint32))
        self._prompt_kwargs[DEEPSTACK_KEY] = [layer[indices] for layer in self._deepstack]

    def prompt_step(self) -> int:
        if self._deepstack is not None and self.needs_processing():
            # The chunk upstream's prompt_step takes (no right padding, no APC checkpoints).
            remaining = int(self._inputs_embeds.shape[1])
            size = min(self.prefill_step_size or remaining, remaining - 1)
            start = self._processed_prompt_columns
            self._select(start, start + size)
        return int(super().prompt_step())

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        start = self._processed_prompt_columns
        self._select(start, start + int(self._inputs_embeds.shape[1]))
        return super().generate(*args, **kwargs)


def install() -> None:
    """Make mlx-vlm's BatchGenerator use both corrections (it looks both names up per call)."""
    setattr(_ar, "_merge_prefill_prompt_kwargs", merge_prefill_prompt_kwargs)  # noqa: B010
    setattr(_generate_package, "PromptProcessingBatch", RowwisePromptBatch)  # noqa: B010
