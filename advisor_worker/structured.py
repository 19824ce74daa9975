"""Constrained decoding to a JSON schema with llguidance; its token mask also runs without Metal."""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any, cast

import llguidance
import llguidance.hf
import llguidance.numpy
import mlx.core as mx
import numpy as np
from mlx_vlm.structured import _apply_llguidance_mask as _metal_apply_mask
from transformers import PreTrainedTokenizerFast

from advisor_worker.errors import InvalidOutput

if TYPE_CHECKING:
    # Declared only in llguidance's type stub, not at runtime.
    from llguidance._lib import JsonCompileOptions

logger = logging.getLogger(__name__)

__all__ = [
    "JsonSchemaConstraint",
    "JsonSchemaLogitsProcessor",
    "apply_token_bitmask",
    "json_schema_constraint",
    "llguidance_tokenizer",
]

# The separators mlx-vlm uses: what chat models are used to writing, with no free whitespace
# (free whitespace lets a weak model pad its answer until max_tokens).
_JSON_OPTIONS: JsonCompileOptions = {
    "item_separator": ", ",
    "key_separator": ": ",
    "whitespace_flexible": False,
}


# Each byte of the packed mask as eight additive biases: 0 where the bit is set, -inf where
# it is clear (llguidance's order: bit j of a word is token 32 * word + j, little-endian).
_BYTE_BIASES = np.where(
    np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little") == 1,
    np.float32(0.0), np.float32(-np.inf),
).astype(np.float32)  # fmt: skip


def apply_token_bitmask(logits: mx.array, bitmask: mx.array | np.ndarray) -> mx.array:
    """Set every logit whose bit is clear in llguidance's packed int32 mask to -inf.

    The mask becomes an additive bias (0 or -inf) on the host, by a byte lookup, and one add
    on the device: on a CPU, `mx.where` over the unpacked bits cost 0.71 ms a row at 151,936
    logits, this 0.24 ms (`python -m bench.row_costs`). Runs wherever MLX does. Token ids past
    the mask's end (padded model vocabularies) are disallowed, as in mlx-vlm's kernel.
    """
    squeeze = logits.ndim == 1
    if squeeze:
        logits = logits[None]
    packed = np.ascontiguousarray(np.asarray(bitmask, dtype=np.int32))
    if packed.ndim == 1:
        packed = packed[None]
    bias = _BYTE_BIASES[packed.view(np.uint8)].reshape(packed.shape[0], -1)
    vocab = logits.shape[-1]
    if bias.shape[-1] >= vocab:
        bias = bias[:, :vocab]
    else:
        bias = np.pad(bias, [(0, 0), (0, vocab - bias.shape[-1])], constant_values=-np.inf)
    masked = logits + mx.array(bias, dtype=logits.dtype)
    return masked[0] if squeeze else masked


class JsonSchemaConstraint:
    """A JSON schema compiled for one tokenizer; hands out one fresh processor per request."""

    def __init__(self, tokenizer: Any, schema: dict[str, Any] | str) -> None:
        self.tokenizer = tokenizer
        self.schema_text = schema if isinstance(schema, str) else json.dumps(schema)
        self.llg_tokenizer = llguidance_tokenizer(tokenizer)
        self.grammar = llguidance.LLMatcher.grammar_from_json_schema(
            self.schema_text, overrides=_JSON_OPTIONS
        )
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
            self.grammar, self.llg_tokenizer
        )
        if is_error or messages:
            # A schema feature llguidance ignores would silently loosen the constraint.
            raise ValueError(f"JSON schema not fully supported by llguidance: {messages}")

    def new_processor(self) -> JsonSchemaLogitsProcessor:
        """A processor holding the grammar state of one generation; never share it."""
        return JsonSchemaLogitsProcessor(self)


class JsonSchemaLogitsProcessor:
    """mlx-vlm logits processor: masks each step's logits to the schema's valid continuations.

    mlx-vlm calls it as `processor(tokens, logits)` once per step, before sampling. The first
    call sees the prompt and consumes nothing; every later call first feeds the token sampled
    in the previous step to the matcher. Once the JSON is complete only EOS stays allowed.
    """

    def __init__(self, constraint: JsonSchemaConstraint) -> None:
        self._matcher = llguidance.LLMatcher(constraint.llg_tokenizer, constraint.grammar)
        self._bitmask = llguidance.numpy.allocate_token_bitmask(
            1, constraint.llg_tokenizer.vocab_size
        )
        self._eos = constraint.llg_tokenizer.eos_token
        self._started = False
        # The last token was consumed by forced_after; the next step must not consume it again.
        self._consumed_ahead = False
        self._use_metal = mx.metal.is_available() and mx.default_device() == mx.gpu

    @property
    def is_accepting(self) -> bool:
        """Whether the tokens consumed so far form a complete document."""
        return bool(self._matcher.is_accepting())

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if self._started:
            self._consume(cast(int, tokens.reshape(-1)[-1].item()))
        self._started = True
        return self._masked(logits)

    def process_last_token(self, last_token: int, logits: mx.array) -> mx.array:
        """The same step, for mlx-vlm's batch generator, which passes only the last token."""
        if self._started and not self._consumed_ahead:
            self._consume(int(last_token))
        self._started = True
        self._consumed_ahead = False
        return self._masked(logits)

    def forced_after(self, last_token: int) -> list[int]:
        """Consume `last_token` and return the tokens the grammar forces next (llguidance's
        fast-forward tokens, up to EOS, not consumed yet: see `consume_forced`).

        The step's `process_last_token` must then get the same `last_token`: it is not
        consumed twice, and the logits it masks are those after the forced tokens fed.
        """
        if not self._started or self._consumed_ahead:
            return []
        self._consume(int(last_token))
        self._consumed_ahead = True
        forced: list[int] = []
        for token in self._matcher.compute_ff_tokens():
            if token == self._eos:
                break
            forced.append(int(token))
        return forced

    def consume_forced(self, tokens: list[int]) -> None:
        """Consume a prefix of `forced_after`'s tokens: the ones fed to the model."""
        if tokens and not self._matcher.consume_tokens(tokens):
            raise InvalidOutput(
                f"constrained decoding rejected its forced tokens: {self._matcher.get_error()}"
            )

    def _consume(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise InvalidOutput(
                f"constrained decoding rejected token {token}: {self._matcher.get_error()}"
            )

    def _masked(self, logits: mx.array) -> mx.array:
        llguidance.numpy.fill_next_token_bitmask(self._matcher, self._bitmask, 0)
        if self._matcher.is_error():
            raise InvalidOutput(f"constrained decoding failed: {self._matcher.get_error()}")
        if self._use_metal:
            # A copy: the lazy graph may read the mask after the next step refills the buffer.
            out = _metal_apply_mask(logits, mx.array(self._bitmask))
            return out.reshape(logits.shape)
        # The bias it adds is a copy already: the next fill cannot reach this step's graph.
        return apply_token_bitmask(logits, self._bitmask)


_cache: dict[tuple[int, str], JsonSchemaConstraint] = {}
_cache_lock = threading.Lock()
# One llguidance tokenizer per tokenizer object, shared by every schema compiled for it.
_llg_tokenizers: dict[int, tuple[Any, llguidance.LLTokenizer]] = {}
_llg_lock = threading.Lock()


def llguidance_tokenizer(tokenizer: Any) -> llguidance.LLTokenizer:
    """llguidance's view of `tokenizer`, built once per tokenizer object in this process.

    Building it walks the whole vocabulary (1.5-4 s at Qwen's 151,669 tokens); every schema
    (each text limit is its own) reuses it.
    """
    with _llg_lock:
        held = _llg_tokenizers.get(id(tokenizer))
        # id() can be reused after a tokenizer is freed; the identity check catches that.
        if held is None or held[0] is not tokenizer:
            held = (tokenizer, _llguidance_view(tokenizer))
            _llg_tokenizers[id(tokenizer)] = held
            logger.debug("Built llguidance's tokenizer (%d ids)", held[1].vocab_size)
        return held[1]


def _llguidance_view(tokenizer: Any) -> llguidance.LLTokenizer:
    """`llguidance.hf.from_tokenizer` without its copy of the Rust tokenizer.

    It copies the tokenizer only to switch padding and truncation off before serializing it;
    a copy goes through a full serialization of its own (0.6 s of CPU at Qwen's vocabulary,
    of 1.85 s in all). Here the tokenizer is serialized as it is and the two settings are
    nulled in the text. A worker's tokenizer has padding on by the time the view is built: a
    padded batch call (the first job's prompt) switches it on and leaves it on.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(tokenizer, PreTrainedTokenizerFast) and backend is not None:
        serialized = _without_padding_or_truncation(backend.to_str())
        if serialized is not None:
            return llguidance.LLTokenizer(serialized, eos_token=tokenizer.eos_token_id)
    return llguidance.hf.from_tokenizer(tokenizer)


# tokenizers serializes these two first, before the vocabulary: {"version":..,"truncation":..
_SETTINGS_PREFIX = 4096


def _without_padding_or_truncation(text: str) -> str | None:
    """The serialized tokenizer with top-level `truncation` and `padding` set to null; None
    if the text is not laid out as expected (the caller then takes the library's way)."""
    decoder = json.JSONDecoder()
    for key in ("truncation", "padding"):
        marker = f'"{key}":'
        at = text.find(marker, 0, _SETTINGS_PREFIX)
        if at < 0:
            return None
        start = at + len(marker)
        try:
            _, end = decoder.raw_decode(text, start)
        except ValueError:
            return None
        text = text[:start] + "null" + text[end:]
    return text


def json_schema_constraint(tokenizer: Any, schema: dict[str, Any]) -> JsonSchemaConstraint:
    """The compiled constraint for (tokenizer, schema), built once per process."""
    # Not sorted: property order in the schema is the order the model must write.
    key = (id(tokenizer), json.dumps(schema))
    with _cache_lock:
        cached = _cache.get(key)
        # id() can be reused after a tokenizer is freed; the identity check catches that.
        if cached is None or cached.tokenizer is not tokenizer:
            cached = JsonSchemaConstraint(tokenizer, key[1])
            _cache[key] = cached
            logger.debug("Compiled JSON schema constraint (%d bytes)", len(key[1]))
        return cached
