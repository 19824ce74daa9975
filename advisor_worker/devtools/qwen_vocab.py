"""Qwen's own BPE vocabulary as a Hugging Face tokenizer, converted from dashscope's tiktoken ranks.

dashscope (a development and test dependency) ships `qwen.tiktoken`: 151,643 byte strings with
their BPE ranks. A rank order is a merge order, so the vocabulary and merges of a byte-level
BPE follow from the ranks alone. The conversion is deterministic and takes seconds, so its
result is cached by the rank file's digest.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ADDED_TOKENS",
    "EMBEDDING_ROWS",
    "SPECIAL_START_ID",
    "QwenRanks",
    "VocabUnavailable",
    "embedding_rows",
    "load_ranks",
    "qwen_tokenizer",
]

# Qwen3-VL's embedding (and lm_head) rows: the BPE, the added tokens, then unused padding.
EMBEDDING_ROWS = 151_936
SPECIAL_START_ID = 151_643
# Qwen pads its rows to a multiple of this (151,936 = 1,187 x 128).
_ROW_MULTIPLE = 128

# Qwen3-VL's added tokens from id 151,643 in its order, with its `special` flags.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)

# Bumped when the conversion changes, so a stale cached tokenizer is never reused.
_CONVERSION_VERSION = 1


class VocabUnavailable(RuntimeError):
    """dashscope's Qwen rank file cannot be found or read."""


@dataclass(frozen=True)
class QwenRanks:
    """The rank file's contents: byte strings by rank, the split pattern, the file's digest."""

    ranks: dict[bytes, int]
    pattern: str
    digest: str


def _package_dir() -> Path:
    # find_spec does not run dashscope's __init__ (which pulls in its HTTP client stack).
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise VocabUnavailable(
            "Building a model needs Qwen's vocabulary from the dashscope package; install the "
            "test extra: pip install -e '.[test]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def load_ranks() -> QwenRanks:
    """Read dashscope's `qwen.tiktoken` and the split pattern its Qwen tokenizer uses."""
    package = _package_dir()
    rank_file = package / "resources" / "qwen.tiktoken"
    source_file = package / "tokenizers" / "qwen_tokenizer.py"
    try:
        raw = rank_file.read_bytes()
        source = source_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise VocabUnavailable(f"Cannot read Qwen's vocabulary from {package}: {exc}") from exc
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in raw.splitlines() if line)
    }
    if sorted(ranks.values()) != list(range(len(ranks))) or len(ranks) != SPECIAL_START_ID:
        raise VocabUnavailable(
            f"{rank_file} holds {len(ranks)} ranks, not Qwen's {SPECIAL_START_ID} contiguous ones"
        )
    digest = hashlib.sha256(raw + source.encode()).hexdigest()
    return QwenRanks(ranks, _split_pattern(source, source_file), digest)


def _split_pattern(source: str, path: Path) -> str:
    """The `PAT_STR = r"..."` literal of dashscope's Qwen tokenizer, read without importing it."""
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "PAT_STR" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise VocabUnavailable(f"{path} no longer defines PAT_STR; the conversion needs updating")


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet: each byte as one printable character (GPT-2's table)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def _vocab_and_merges(
    ranks: dict[bytes, int],
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The BPE vocabulary and merges that reproduce tiktoken's lowest-rank-first merging.

    Every split of a token into two known pieces becomes a merge at the token's rank, so at
    each step the BPE joins the pair whose result has the lowest rank, as tiktoken does.
    """
    alphabet = _bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges: list[tuple[int, int, int, str, str]] = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            left_rank, right_rank = ranks.get(left), ranks.get(right)
            if left_rank is not None and right_rank is not None:
                merges.append((rank, left_rank, right_rank, text(left), text(right)))
    merges.sort()
    return vocab, [(left, right) for _, _, _, left, right in merges]


def embedding_rows(kept: int | None = None) -> int:
    """Embedding and head rows for Qwen's vocabulary, or for its first `kept` ranks: the BPE,
    the 26 added tokens, then padding up to a multiple of 128, as Qwen3-VL pads."""
    if kept is None:
        return EMBEDDING_ROWS
    return -(-(kept + len(ADDED_TOKENS)) // _ROW_MULTIPLE) * _ROW_MULTIPLE


def _check_kept(kept: int | None) -> None:
    if kept is not None and not 256 <= kept <= SPECIAL_START_ID:
        raise ValueError(
            f"A vocabulary cut keeps between 256 (the bytes) and {SPECIAL_START_ID} ranks, "
            f"not {kept}"
        )


def _convert(source: QwenRanks, kept: int | None = None) -> Tokenizer:
    ranks = source.ranks
    if kept is not None:
        # The first `kept` ranks are the first `kept` merges: a smaller BPE that splits text
        # as Qwen's does wherever Qwen's own pieces are among them.
        ranks = {token: rank for token, rank in ranks.items() if rank < kept}
    start = SPECIAL_START_ID if kept is None else kept
    vocab, merges = _vocab_and_merges(ranks)
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False)
    )
    # Qwen's tokenizer.json has an NFC normalizer; tiktoken has none. Keeping tiktoken's
    # behaviour makes the two agree byte for byte.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(source.pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    for token, special in ADDED_TOKENS:
        added = AddedToken(token, special=special, normalized=False)
        # One at a time, to keep Qwen's order across special and non-special tokens.
        if special:
            tokenizer.add_special_tokens([added])
        else:
            tokenizer.add_tokens([added])
    for offset, (token, _) in enumerate(ADDED_TOKENS):
        if tokenizer.token_to_id(token) != start + offset:
            raise VocabUnavailable(f"{token} did not land on id {start + offset}")
    return tokenizer


def _cache_dir() -> Path:
    return Path.home() / ".cache" / "mondrian-advisor"


@lru_cache(maxsize=4)
def qwen_tokenizer(kept: int | None = None) -> Tokenizer:
    """Qwen3-VL's tokenizer (151,669 ids), converted once and then read from the cache.

    With `kept`, only Qwen's first `kept` BPE ranks, then the same added tokens from id
    `kept`: the test suite's models use a cut, so that a decode step is not mostly a
    151,936-row head (docs/testing.md).
    """
    _check_kept(kept)
    source = load_ranks()
    cut = "" if kept is None else f"-first{kept}"
    cached = _cache_dir() / f"qwen-vocab-v{_CONVERSION_VERSION}-{source.digest[:16]}{cut}.json"
    if cached.is_file():
        try:
            return Tokenizer.from_file(str(cached))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception
            logger.warning("Rebuilding the unreadable cached tokenizer %s: %s", cached, exc)
    tokenizer = _convert(source, kept)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: parallel builds never read a half-written file.
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        tokenizer.save(str(partial))
        partial.replace(cached)
    except OSError as exc:
        logger.warning("Could not cache the converted tokenizer at %s: %s", cached, exc)
    return tokenizer
