"""The batch's decode step: no full-vocabulary log-softmax, and forced tokens fed at B=1.

mlx-vlm 0.7.10's `GenerationBatch._step` turns every row's processed logits into
log-probabilities (a logsumexp over all 151,936 entries a row) before its sampler, argmax,
picks a token; the worker asks for no log-probabilities, and argmax(logits - c) is
argmax(logits). Its own extension point, a language model's `fused_greedy_decode`, takes
the step instead when the batch samples greedily (ours does: the seeded Gumbel noise is a
logits processor, so the batch's sampler is argmax at every temperature). This installs
that hook on the model: the forward, each row's processors on its own logits (as upstream
applies them), one argmax. On this CPU the log-softmax was about 2 ms per row per step at
the tiny model's size; on a Mac it is noise.

When the batch has one row, the step also feeds the tokens its grammar forces (llguidance's
fast-forward tokens: the JSON's keys and punctuation) with the row's last token, as one
forward: k forced tokens cost one step instead of k (see `_forced_run`).
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
    last_tokens = cast(list[int], inputs[:, -1].tolist())
    forced = _forced_run(last_tokens, logits_processors)
    if forced:
        inputs = mx.array([[*last_tokens, *forced]], dtype=inputs.dtype)
    output = model(inputs, cache=cache, **kwargs)
    logits = output.logits if hasattr(output, "logits") else output
    logits = logits[:, -1, :]
    if logits_processors and any(logits_processors):
        rows = []
        for i, processors in enumerate(logits_processors):
            row = logits[i : i + 1]
            for processor in processors or []:
                row = processor.process_last_token(last_tokens[i], row)
            rows.append(row)
        logits = mx.concatenate(rows, axis=0)
    return mx.argmax(logits, axis=-1)


def _forced_run(last_tokens: list[int], logits_processors: list[Any] | None) -> list[int]:
    """At B=1, the tokens the row's grammar forces after its last token, already consumed.

    One row owns the batch's KV cache, so its last token and the forced ones go through the
    model as one forward (positions follow from the cache offset and the row's rope delta,
    token by token), and only the logits after the last forced token are sampled. At B > 1
    the rows share one cache length and advance one token a step (mlx-vlm 0.7.10 has no
    ragged decode step), so each forced token takes its step as before.
    """
    if len(last_tokens) != 1 or not logits_processors or not logits_processors[0]:
        return []
    processors = logits_processors[0]
    forced: list[int] = []
    for processor in processors:
        feed = getattr(processor, "feed_forced", None)
        if feed is not None:
            forced = feed(last_tokens[0])
            break
    if forced:
        for processor in processors:
            skip = getattr(processor, "skip", None)
            if skip is not None:
                skip(len(forced))
    return forced
