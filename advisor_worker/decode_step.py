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

The step also feeds the tokens the rows' grammars force (llguidance's fast-forward tokens:
the JSON's keys and punctuation) with each row's last token, as one forward: k forced
tokens cost one step instead of k, as many for every row (see `_forced_runs`).
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
    forced = _forced_runs(last_tokens, logits_processors)
    if forced:
        fed = [[last, *run] for last, run in zip(last_tokens, forced, strict=True)]
        inputs = mx.array(fed, dtype=inputs.dtype)
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


def _forced_runs(
    last_tokens: list[int], logits_processors: list[Any] | None
) -> list[list[int]] | None:
    """The forced tokens each row's grammar takes after its last token, as many for every row.

    The rows share one KV cache length and advance together, so each row is fed the first k
    tokens of its forced run, k the shortest run in the batch (within each row's budget):
    alone in the batch, a row takes its whole run; in a batch, runs that start together
    (every row writing the same keys) go in together. A row's last token and its k tokens
    go through the model as one forward (positions follow from each row's cache offset and
    rope delta, token by token), and only the logits after them are sampled. None: a step
    of one token per row, as upstream's.
    """
    if not logits_processors or len(logits_processors) != len(last_tokens):
        return None
    grammars: list[Any] = []
    runs: list[list[int]] = []
    for last, processors in zip(last_tokens, logits_processors, strict=True):
        grammar = next((p for p in processors or [] if hasattr(p, "forced_after")), None)
        if grammar is None:
            return None
        grammars.append(grammar)
        runs.append(grammar.forced_after(last))
    k = min(len(run) for run in runs)
    if k == 0:
        return None
    for grammar, run, processors in zip(grammars, runs, logits_processors, strict=True):
        grammar.consume_forced(run[:k])
        for processor in processors:
            skip = getattr(processor, "skip", None)
            if skip is not None:
                skip(k)
    return [run[:k] for run in runs]
