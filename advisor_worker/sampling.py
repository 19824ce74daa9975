"""Per-row logits processors of the batch: a row's grammar, guarded, and its seeded sampler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
from mlx_vlm.sample_utils import apply_top_p

__all__ = ["GuardedProcessor", "GumbelSampling", "top_k_ids"]

# Entries per block of the two-stage top-k: a row's blocks are ranked by their maxima first.
_BLOCK = 128


def top_k_ids(scores: mx.array, k: int) -> mx.array:
    """The ids of each row's k largest scores, in ascending id order.

    Exact, in two stages: every one of the k largest lies in one of the k blocks with the
    largest maxima (a block holding one has a maximum at least the k-th largest value), so
    the k are picked from those k blocks alone. On a CPU, at 151,936 entries a row, this cost
    0.13 ms against 1.7 ms for one argpartition of the whole row. Ascending ids make the
    order, and so which noise a candidate draws, independent of the selection's internals.
    Among equal scores at the k-th place the choice is arbitrary, as with argpartition.
    """
    rows, vocab = scores.shape
    blocks = -(-vocab // _BLOCK)
    if k >= blocks:
        picked = mx.argpartition(-scores, kth=k - 1, axis=-1)[..., :k]
        return mx.sort(picked, axis=-1)
    pad = blocks * _BLOCK - vocab
    if pad:
        scores = mx.pad(scores, [(0, 0), (0, pad)], constant_values=-mx.inf)
    blocked = scores.reshape(rows, blocks, _BLOCK)
    best = mx.argpartition(-blocked.max(axis=-1), kth=k - 1, axis=-1)[..., :k]
    candidates = mx.take_along_axis(blocked, best[..., None], axis=1).reshape(rows, k * _BLOCK)
    ids = (best[..., None] * _BLOCK + mx.arange(_BLOCK)[None, None, :]).reshape(rows, k * _BLOCK)
    picked = mx.argpartition(-candidates, kth=k - 1, axis=-1)[..., :k]
    return mx.sort(mx.take_along_axis(ids, picked, axis=-1), axis=-1)


class GuardedProcessor:
    """A row's logits processor that records its failure instead of raising out of the step.

    An exception inside BatchGenerator.next() would end every row; this confines a grammar
    error to its own row, which the scheduler then fails alone. With `overlap`, it first
    starts evaluating the step's logits (MLX is lazy), so the model's forward runs while
    llguidance computes this and the other rows' masks on this thread.
    """

    def __init__(self, inner: Any, *, overlap: bool = True) -> None:
        self.inner = inner
        self.overlap = overlap
        self.error: BaseException | None = None
        # How many tokens the row may still take besides the one a step samples; the
        # scheduler sets it. Forced tokens are fed only within it.
        self.budget: Callable[[], int] = lambda: 0
        # Forced tokens fed since the scheduler last took them, in order.
        self._fed: list[int] = []

    def forced_after(self, last_token: int) -> list[int]:
        """The grammar's forced tokens after `last_token`, which it consumes, within the row's
        budget (see JsonSchemaLogitsProcessor.forced_after); [] once the row has failed."""
        forced_after = getattr(self.inner, "forced_after", None)
        if self.error is not None or forced_after is None:
            return []
        try:
            return list(forced_after(last_token))[: max(0, self.budget())]
        except Exception as exc:  # noqa: BLE001 - reported on this row by the scheduler
            self.error = exc
            return []

    def consume_forced(self, tokens: list[int]) -> None:
        """Feed these forced tokens to the grammar; the scheduler takes them as output."""
        if self.error is not None or not tokens:
            return
        try:
            self.inner.consume_forced(tokens)
        except Exception as exc:  # noqa: BLE001 - reported on this row by the scheduler
            self.error = exc
            return
        self._fed.extend(tokens)

    def take_fed(self) -> list[int]:
        """The forced tokens fed since the last call: the row's output after its step's token."""
        fed, self._fed = self._fed, []
        return fed

    def process_last_token(self, last_token: int, logits: mx.array) -> mx.array:
        if self.error is not None:
            return logits
        if self.overlap:
            mx.async_eval(logits)
        try:
            return self.inner.process_last_token(last_token, logits)
        except Exception as exc:  # noqa: BLE001 - reported on this row by the scheduler
            self.error = exc
            return logits

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if self.error is not None:
            return logits
        if self.overlap:
            mx.async_eval(logits)
        try:
            return self.inner(tokens, logits)
        except Exception as exc:  # noqa: BLE001 - reported on this row by the scheduler
            self.error = exc
            return logits


class GumbelSampling:
    """Per-row seeded sampling as a logits processor: argmax(log p + Gumbel noise).

    The batch's sampler is argmax, so adding Gumbel noise drawn from this row's own key
    (the job's seed, the row's own token position; never the batch position or the batch's
    step) samples from the tempered, top-k/top-p filtered distribution reproducibly per
    job, whatever else shares the batch. top_k and top_p come from the checkpoint's
    generation_config.
    """

    def __init__(self, temperature: float, top_p: float, top_k: int, seed: int) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.seed = seed
        self.position = 0

    def skip(self, tokens: int) -> None:
        """Positions the grammar forced and nobody sampled: the next draw uses the key of the
        row's true position, as when every token was a step of its own."""
        self.position += tokens

    def process_last_token(self, _last_token: int, logits: mx.array) -> mx.array:
        key = mx.random.key((self.seed * 1_000_003 + self.position) & 0xFFFFFFFF)
        self.position += 1
        scores = logits.astype(mx.float32)
        vocab = scores.shape[-1]
        if not 0 < self.top_k < vocab:
            return self._perturbed(scores, key)
        # Only the top k can be drawn: temper, nucleus-filter and perturb those k alone, not
        # all 151,936 (a sort of the whole vocabulary cost more than the model's step).
        candidates = top_k_ids(scores, self.top_k)
        perturbed = self._perturbed(mx.take_along_axis(scores, candidates, axis=-1), key)
        floor = mx.full(scores.shape, -mx.inf, dtype=mx.float32)
        return mx.put_along_axis(floor, candidates, perturbed, axis=-1)

    def _perturbed(self, scores: mx.array, key: mx.array) -> mx.array:
        scores = scores / self.temperature
        scores = scores - mx.logsumexp(scores, axis=-1, keepdims=True)
        if 0 < self.top_p < 1:
            scores = apply_top_p(scores, self.top_p)
        uniform = mx.random.uniform(low=1e-20, high=1.0, shape=scores.shape, key=key)
        return scores - mx.log(-mx.log(uniform))

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        return self.process_last_token(0, logits)
