"""Tokenizers for building prompts whose token counts are exact.

Every generator in the benchmark builds prompt text out of *pieces*: token ids whose text
is a space plus a short lowercase word, chosen so that concatenating their texts encodes
back to the same ids. A prompt of n tokens is therefore n random pieces, decoded, then
re-encoded to verify (and fixed up at the tail if a tokenizer merges across pieces).

Two tokenizers are supported, both behind the small :class:`BenchTokenizer` protocol:

* ``"sim"``: the simulated engine's :class:`~strata_enginesim.domain.tokenizer.SimTokenizer`
  (no files, deterministic; its ``output_token_ids`` are the pieces);
* a path to a local Hugging Face tokenizer directory (or its ``tokenizer.json``), loaded
  with the optional ``tokenizers`` package (``pip install 'strata-bench[hf]'``).

Encoding never adds special tokens: counts are of the text itself (a chat template or a
BOS added by the server comes on top).
"""

from __future__ import annotations

import importlib
import random
import re
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from strata_enginesim.domain.tokenizer import SimTokenizer

__all__ = [
    "BenchTokenizer",
    "HFTokenizer",
    "SimBenchTokenizer",
    "extend_to_length",
    "load_tokenizer",
    "piece_ids",
    "random_piece_ids",
    "text_of_length",
]

_MAX_FIXUPS: Final = 16
_MAX_SCANNED_PIECES: Final = 8192
_WORD_RE: Final = re.compile(r"[a-z]{2,12}")


@runtime_checkable
class BenchTokenizer(Protocol):
    """What the generators need from a tokenizer (no special tokens added or kept)."""

    @property
    def vocab_size(self) -> int:
        """Number of ids in the vocabulary."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, special tokens skipped."""
        ...


class SimBenchTokenizer:
    """The simulator's tokenizer; pieces are its output vocabulary (space + 1-3 letters)."""

    def __init__(self) -> None:
        self._tok = SimTokenizer()

    @property
    def vocab_size(self) -> int:
        """Number of ids in the vocabulary."""
        return int(self._tok.vocab_size)

    @property
    def piece_ids(self) -> Sequence[int]:
        """Ids safe to concatenate: each is a space plus 1-3 lowercase letters."""
        return self._tok.output_token_ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (``add_special_tokens=False``)."""
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` (exact inverse of :meth:`encode` for text without specials)."""
        return self._tok.decode(ids)


class HFTokenizer:
    """A local Hugging Face ``tokenizer.json`` loaded with the ``tokenizers`` package.

    Args:
        path: a tokenizer directory holding ``tokenizer.json``, or the file itself.

    Raises:
        ImportError: the optional ``tokenizers`` package is not installed.
        FileNotFoundError: no ``tokenizer.json`` at `path`.
    """

    def __init__(self, path: str | Path) -> None:
        file = Path(path)
        if file.is_dir():
            file = file / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path}")
        try:
            module = importlib.import_module("tokenizers")
        except ImportError as exc:
            raise ImportError(
                f"loading the tokenizer at {path} needs the optional 'tokenizers' package "
                "(pip install 'strata-bench[hf]'); use 'sim' for the simulator's tokenizer"
            ) from exc
        self._tok: Any = module.Tokenizer.from_file(str(file))
        self._pieces: tuple[int, ...] | None = None

    @property
    def vocab_size(self) -> int:
        """Number of ids in the vocabulary (added tokens included)."""
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def piece_ids(self) -> Sequence[int]:
        """Whole-word ids that survive concatenation (scanned once, then cached)."""
        if self._pieces is None:
            self._pieces = _scan_pieces(self)
        return self._pieces

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, special tokens skipped."""
        return str(self._tok.decode(list(ids), skip_special_tokens=True))


def load_tokenizer(spec: str) -> BenchTokenizer:
    """Load the tokenizer named by `spec`: ``"sim"`` or a local HF tokenizer path.

    Hub ids are not supported on purpose (benchmarks run offline): pass a directory.

    Raises:
        ImportError: a path was given and ``tokenizers`` is not installed.
        FileNotFoundError: the path holds no ``tokenizer.json``.
    """
    if spec == "sim":
        return SimBenchTokenizer()
    return HFTokenizer(spec)


_SCANNED: weakref.WeakKeyDictionary[Any, tuple[int, ...]] = weakref.WeakKeyDictionary()


def piece_ids(tokenizer: BenchTokenizer) -> Sequence[int]:
    """The ids prompts are built from (the tokenizer's own ``piece_ids`` when it has them).

    For a foreign tokenizer the vocabulary is scanned once (cached per object when it can
    be weakly referenced) for ids whose text is a single lowercase word that round-trips
    on its own and when repeated.

    Raises:
        ValueError: no usable piece in the vocabulary.
    """
    own = getattr(tokenizer, "piece_ids", None)
    if isinstance(own, Sequence):
        return own
    try:
        cached = _SCANNED.get(tokenizer)
    except TypeError:
        return _scan_pieces(tokenizer)
    if cached is None:
        cached = _scan_pieces(tokenizer)
        _SCANNED[tokenizer] = cached
    return cached


def _scan_pieces(tokenizer: BenchTokenizer) -> tuple[int, ...]:
    found: list[int] = []
    for token_id in range(tokenizer.vocab_size):
        word = tokenizer.decode([token_id]).strip()
        if not _WORD_RE.fullmatch(word):
            continue
        twice = tokenizer.decode([token_id, token_id])
        if twice.split() == [word, word] and tokenizer.encode(twice) == [token_id, token_id]:
            found.append(token_id)
            if len(found) >= _MAX_SCANNED_PIECES:
                break
    if not found:
        raise ValueError("the tokenizer has no whole-word tokens to build prompts from")
    return tuple(found)


def random_piece_ids(tokenizer: BenchTokenizer, n: int, rng: random.Random) -> list[int]:
    """`n` piece ids drawn uniformly (with replacement) with `rng`."""
    pieces = piece_ids(tokenizer)
    return [pieces[rng.randrange(len(pieces))] for _ in range(n)]


def extend_to_length(tokenizer: BenchTokenizer, head: str, n: int, rng: random.Random) -> str:
    """Text that starts with `head` (byte for byte) and encodes to exactly `n` tokens.

    Random pieces are appended, the whole is re-encoded, and the tail is grown or cut
    until the count is exact (one pass for tokenizers that never merge across pieces).

    Raises:
        ValueError: `head` alone is longer than `n` tokens, or the count did not converge.
    """
    head_tokens = len(tokenizer.encode(head)) if head else 0
    if head_tokens > n:
        raise ValueError(f"the head is already {head_tokens} tokens, more than the {n} asked for")
    tail = random_piece_ids(tokenizer, n - head_tokens, rng)
    for _ in range(_MAX_FIXUPS):
        text = head + tokenizer.decode(tail) if tail else head
        missing = n - len(tokenizer.encode(text))
        if missing == 0:
            return text
        if missing > 0:
            tail += random_piece_ids(tokenizer, missing, rng)
        elif -missing <= len(tail):
            del tail[len(tail) + missing :]
        else:
            break
    raise ValueError(f"could not build a text of exactly {n} tokens after {head!r:.40}")


def text_of_length(tokenizer: BenchTokenizer, n: int, rng: random.Random) -> str:
    """Random text whose encoding (no special tokens) has exactly `n` tokens.

    Raises:
        ValueError: `n` is negative or the count did not converge.
    """
    if n < 0:
        raise ValueError(f"a text cannot have {n} tokens")
    return extend_to_length(tokenizer, "", n, rng)
