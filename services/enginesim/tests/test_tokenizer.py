"""SimTokenizer: reversible, deterministic, special-token aware, and about as dense as a real one."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from strata_enginesim.domain.tokenizer import SimTokenizer

TOK = SimTokenizer()

# Golden vector: these ids are part of the simulator's wire behaviour (prefix-cache block
# hashes and KV events are computed over them); changing them is a breaking change.
GOLDEN_TEXT = "The quick brown fox jumps over the lazy dog."
GOLDEN_IDS = [1, 189192, 337548, 462, 275922, 1745, 292123, 308880, 1302, 329416, 277, 349000, 315805, 284, 283914, 50]

PARAGRAPH = (
    "Large language models are trained on vast amounts of text. When serving them, the cost of a request "
    "depends on the number of tokens in the prompt and in the completion; caching the prefix of a prompt "
    "lets a server skip recomputing attention keys and values that it has already seen. This simulator "
    "reproduces that behaviour without a GPU, which makes it possible to test routing policies, "
    "autoscaling and cache placement at scale."
)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        GOLDEN_TEXT,
        PARAGRAPH,
        "  leading and  double  spaces, trailing ",
        "tabs\tand\nnewlines\r\n",
        "don't over-think x-ray 42 3.14 A1-b2'c3",
        "naïve café, Straße, Ελληνικά, 日本語, emoji 🎉🚀",
        "<s> is special but <b>bold</b> and < s > are not",
    ],
)
def test_decode_inverts_encode_without_special_tokens(text: str) -> None:
    ids = TOK.encode(text, add_special_tokens=False)
    assert TOK.decode(ids) == text.replace("<s>", "")
    if "<s>" not in text:
        assert TOK.decode(ids, skip_special_tokens=False) == text


def test_golden_ids_are_stable() -> None:
    assert TOK.encode(GOLDEN_TEXT) == GOLDEN_IDS
    assert TOK.decode(GOLDEN_IDS) == GOLDEN_TEXT


def test_ids_are_identical_in_a_fresh_process() -> None:
    code = f"from strata_enginesim.domain.tokenizer import SimTokenizer;print(SimTokenizer().encode({GOLDEN_TEXT!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(GOLDEN_IDS)


def test_special_tokens() -> None:
    assert (TOK.unk_token_id, TOK.bos_token_id, TOK.eos_token_id, TOK.pad_token_id) == (0, 1, 2, 3)
    assert TOK.encode("hi") == [1, *TOK.encode("hi", add_special_tokens=False)]
    assert TOK.encode("<s>hi</s><pad><unk>", add_special_tokens=False) == [1, 780, 2, 3, 0]
    assert TOK.decode([1, 780, 2, 3, 0]) == "hi"
    assert TOK.decode([1, 780, 2, 3, 0], skip_special_tokens=False) == "<s>hi</s><pad><unk>"


def test_non_ascii_becomes_utf8_byte_tokens() -> None:
    ids = TOK.encode("é", add_special_tokens=False)
    assert ids == [4 + 0xC3, 4 + 0xA9]
    assert TOK.decode(ids[:1]) == "\ufffd"  # a split multi-byte character decodes to U+FFFD
    assert TOK.convert_ids_to_tokens(ids) == ["<0xC3>", "<0xA9>"]


def test_pieces_are_at_most_three_characters_and_carry_the_leading_space() -> None:
    ids = TOK.encode(" abcdefg", add_special_tokens=False)
    assert TOK.convert_ids_to_tokens(ids) == ["▁abc", "def", "g"]
    assert [TOK.decode([i]) for i in ids] == [" abc", "def", "g"]


def test_chat_template_token_layout() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}, {"type": "text", "text": "x"}],
        },
    ]
    text = TOK.apply_chat_template(messages)
    assert text == "<s>system\nBe brief.</s>\n<s>user\nHi\nx</s>\n<s>assistant\n"
    ids = TOK.encode(text, add_special_tokens=False)
    newline = 4 + ord("\n")
    assert ids[0] == TOK.bos_token_id
    assert ids.count(TOK.bos_token_id) == 3
    assert ids.count(TOK.eos_token_id) == 2
    assert ids[-1] == newline
    assert ids[-2:] == [*TOK.encode("ant", add_special_tokens=False), newline]
    assert TOK.decode(ids, skip_special_tokens=False) == text


def test_chat_template_options() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure"}]
    assert TOK.apply_chat_template(messages, add_generation_prompt=False).endswith("Sure</s>\n")
    assert TOK.apply_chat_template(messages, continue_final_message=True).endswith("<s>assistant\nSure")


def test_english_density_is_realistic() -> None:
    ids = TOK.encode(PARAGRAPH, add_special_tokens=False)
    assert 2.5 <= len(PARAGRAPH) / len(ids) <= 5


def test_vocabulary_bounds_and_output_ids() -> None:
    assert TOK.vocab_size == 532_868 < 2**20
    out = TOK.output_token_ids
    assert len(out) == len(set(out)) == 26 + 26**2 + 26**3
    assert all(260 <= i < TOK.vocab_size for i in out)
    words = [TOK.decode([i]) for i in out[:3]] + [TOK.decode([out[-1]])]
    assert words == [" a", " b", " c", " zzz"]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TOK.decode([TOK.vocab_size])
