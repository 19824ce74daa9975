"""The batch's decode step without the full-vocabulary log-softmax nothing here reads.

mlx-vlm 0.7.10's `GenerationBatch._step` turns every row's processed logits into
log-probabilities (a logsumexp over all 151,936 entries a row) before its sampler, argmax,
picks a token; the worker asks for no log-probabilities, and argmax(logits - c) is
argmax(logits). Its own extension point, a language model's `fused_greedy_decode`, takes
the step instead when the batch samples greedily (ours does: the seeded Gumbel noise is a
logits processor, so the batch's sampler is argmax at every temperature). This installs
that hook on the model: the forward, each row's processors on its own logits (as upstream
applies them), one argmax. On this CPU the log-softmax was about 2 ms per row per step at
the tiny model's size; on a Mac it is noise.
"""

from __future__ import annotations

import types
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn

__all__ = ["install"]


def install(language_model: nn.Module) -> None:
    """Give `language_model` the fused greedy step BatchGenerator looks for; idempotent."""
    if getattr(language_model, "_advisor_decode_step", False):
        return
    if hasattr(type(language_model), "fused_greedy_decode"):
        # The model's own fused step (mlx-vlm has one for Qwen3.5's quantized head) wins.
        return
    object.__setattr__(language_model, "fused_greedy_decode",
                       types.MethodType(_fused_greedy_decode, language_model))  # fmt: skip
    object.__setattr__(language_model, "supports_fused_greedy_logits_processors",
                       types.MethodType(_supports_processors, language_model))  # fmt: skip
    object.__setattr__(language_model, "_advisor_decode_step", True)


def _supports_processors(_model: nn.Module, logits_processors: list[Any]) -> bool:
    # Every row's processors expose process_last_token (the grammar and the sampler do).
    return all(
        all(hasattr(p, "process_last_token") for p in processors or [])
        for processors in logits_processors
    )


def _fused_greedy_decode(
    model: nn.Module,
    inputs: mx.array,
    cache: Any = None,
    logits_processors: list[Any] | None = None,
    **kwargs: Any,
) -> mx.array:
    output = model(inputs, cache=cache, **kwargs)
    logits = output.logits if hasattr(output, "logits") else output
    logits = logits[:, -1, :]
    if logits_processors and any(logits_processors):
        last_tokens = cast(list[int], inputs[:, -1].tolist())
        rows = []
        for i, processors in enumerate(logits_processors):
            row = logits[i : i + 1]
            for processor in processors or []:
                row = processor.process_last_token(last_tokens[i], row)
            rows.append(row)
        logits = mx.concatenate(rows, axis=0)
    return mx.argmax(logits, axis=-1)
