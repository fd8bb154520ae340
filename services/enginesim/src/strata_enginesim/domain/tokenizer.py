"""A deterministic, file-free tokenizer for the simulated engine.

The simulator needs token ids that behave like a real model's: stable across processes
and restarts (prefix caching and KV-event hashes depend on them), reversible (``/detokenize``
and streamed text), cheap, and with an English density near real tokenizers (3-4
characters per token). No vocabulary file is loaded: every id maps to its text by
arithmetic.

Id layout::

    0 <unk>   1 <s> (BOS)   2 </s> (EOS)   3 <pad>
    4 .. 259                 byte fallback: id = 4 + byte value
    260 .. 260+P-1           pieces without a leading space
    260+P .. 260+2P-1        the same pieces with a leading space
                             (P = 64 + 64**2 + 64**3 = 266_304; vocab_size = 532_868 < 2**20)

A piece is 1-3 characters of the 64-symbol alphabet ``a-z A-Z 0-9 ' -``; within a length
class its offset is the base-64 number its characters spell (alphabet order = digit value).

Encoding: literal special strings (``<s>`` ...) become their ids; the rest is split into
runs of (optional space + alphabet characters), cut greedily into pieces of at most three
characters (the space rides on the first piece), and everything else (punctuation,
newlines, other spaces, non-ASCII) becomes one byte token per UTF-8 byte.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

__all__ = ["ChatMessage", "SimTokenizer"]

ChatMessage = Mapping[str, object]

_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'-"
_DIGIT: Final = {ch: i for i, ch in enumerate(_ALPHABET)}
_BASE: Final = len(_ALPHABET)  # 64
_SPECIALS: Final = ("<unk>", "<s>", "</s>", "<pad>")
_SPECIAL_IDS: Final = {text: i for i, text in enumerate(_SPECIALS)}
_BYTE0: Final = len(_SPECIALS)  # 4
_PIECE0: Final = _BYTE0 + 256  # 260
# Offsets of the 1-, 2- and 3-character classes inside one (space or no-space) half.
_LEN_OFFSET: Final = (0, _BASE, _BASE + _BASE**2)
_HALF: Final = _BASE + _BASE**2 + _BASE**3  # 266_304
_VOCAB_SIZE: Final = _PIECE0 + 2 * _HALF  # 532_868
_MAX_PIECE_CHARS: Final = 3

_SPECIAL_RE: Final = re.compile("|".join(re.escape(s) for s in sorted(_SPECIALS, key=len, reverse=True)))
_CHUNK_RE: Final = re.compile(r" ?[A-Za-z0-9'\-]+|[^A-Za-z0-9'\-]")


class SimTokenizer:
    """The simulator's tokenizer; stateless, so one instance can serve every engine."""

    unk_token_id: Final = 0
    bos_token_id: Final = 1
    eos_token_id: Final = 2
    pad_token_id: Final = 3
    vocab_size: Final = _VOCAB_SIZE
    max_chars_per_token: Final = max(len(s) for s in _SPECIALS)  # longest token string (vLLM's length check)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; BOS first when `add_special_tokens`.

        Literal special strings in `text` (``<s>``, ``</s>``, ``<unk>``, ``<pad>``) are
        always encoded as their special ids.
        """
        ids = [self.bos_token_id] if add_special_tokens else []
        pos = 0
        for match in _SPECIAL_RE.finditer(text):
            _encode_plain(text[pos : match.start()], ids)
            ids.append(_SPECIAL_IDS[match.group()])
            pos = match.end()
        _encode_plain(text[pos:], ids)
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`: the exact inverse of :meth:`encode` for text without specials.

        Consecutive byte tokens are joined and decoded as UTF-8 (invalid sequences become
        U+FFFD). Special ids are dropped when `skip_special_tokens`, else written literally.

        Raises:
            ValueError: an id outside ``[0, vocab_size)``.
        """
        parts: list[str] = []
        pending = bytearray()
        for token_id in ids:
            if _BYTE0 <= token_id < _PIECE0:
                pending.append(token_id - _BYTE0)
                continue
            if pending:
                parts.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            if 0 <= token_id < _BYTE0:
                if not skip_special_tokens:
                    parts.append(_SPECIALS[token_id])
            else:
                parts.append(_piece_text(token_id))
        if pending:
            parts.append(pending.decode("utf-8", errors="replace"))
        return "".join(parts)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Token strings in SentencePiece style: ``▁`` for a leading space, ``<0xNN>`` for bytes."""
        out: list[str] = []
        for token_id in ids:
            if 0 <= token_id < _BYTE0:
                out.append(_SPECIALS[token_id])
            elif _BYTE0 <= token_id < _PIECE0:
                out.append(f"<0x{token_id - _BYTE0:02X}>")
            else:
                text = _piece_text(token_id)
                out.append("▁" + text[1:] if text.startswith(" ") else text)
        return out

    def apply_chat_template(
        self,
        messages: Sequence[ChatMessage],
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
    ) -> str:
        """Render `messages` as ``<s>{role}\\n{content}</s>\\n`` each, then ``<s>assistant\\n``.

        `content` may be a string, None, or a list of ``{"type": "text", "text": ...}``
        parts (joined with newlines; other part types are ignored). With
        `continue_final_message` the last message is left open (no ``</s>\\n``).
        Encode the result with ``add_special_tokens=False``: the template carries its own.
        """
        out: list[str] = []
        last = len(messages) - 1
        for i, message in enumerate(messages):
            out.append(f"<s>{message.get('role', '')}\n{_content_text(message.get('content'))}")
            if not (continue_final_message and i == last):
                out.append("</s>\n")
        if add_generation_prompt and not continue_final_message:
            out.append("<s>assistant\n")
        return "".join(out)

    @property
    def output_token_ids(self) -> Sequence[int]:
        """Ids the simulator samples output from: a space plus 1-3 lowercase letters (18 278 ids)."""
        return _lowercase_word_ids()


def _encode_plain(text: str, ids: list[int]) -> None:
    """Append the ids of `text` (no special strings in it) to `ids`."""
    for chunk in _CHUNK_RE.findall(text):
        if chunk[-1] in _DIGIT:
            space = chunk[0] == " "
            run = chunk[1:] if space else chunk
            for start in range(0, len(run), _MAX_PIECE_CHARS):
                ids.append(_piece_id(run[start : start + _MAX_PIECE_CHARS], space and start == 0))
        else:
            ids.extend(_BYTE0 + b for b in chunk.encode("utf-8"))


def _piece_id(chars: str, space: bool) -> int:
    value = 0
    for ch in chars:
        value = value * _BASE + _DIGIT[ch]
    return _PIECE0 + (_HALF if space else 0) + _LEN_OFFSET[len(chars) - 1] + value


def _piece_text(token_id: int) -> str:
    if not _PIECE0 <= token_id < _VOCAB_SIZE:
        raise ValueError(f"token id {token_id} is outside the vocabulary [0, {_VOCAB_SIZE})")
    space, rest = divmod(token_id - _PIECE0, _HALF)
    length = 3 if rest >= _LEN_OFFSET[2] else 2 if rest >= _LEN_OFFSET[1] else 1
    value = rest - _LEN_OFFSET[length - 1]
    chars = []
    for _ in range(length):
        value, digit = divmod(value, _BASE)
        chars.append(_ALPHABET[digit])
    return (" " if space else "") + "".join(reversed(chars))


def _content_text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return str(content)


@functools.cache
def _lowercase_word_ids() -> tuple[int, ...]:
    letters = _ALPHABET[:26]
    words = list(letters)
    words += [a + b for a in letters for b in letters]
    words += [a + b + c for a in letters for b in letters for c in letters]
    return tuple(_piece_id(w, space=True) for w in words)
