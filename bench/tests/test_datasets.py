"""Datasets: exact-length prompt text, AIBrix JSONL shapes, generators asserted from token ids."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from strata_bench.datasets import (
    MultiturnConfig,
    PrefixSharingConfig,
    PromptEntry,
    SessionEntry,
    SharedPromptEntry,
    generate_multiturn,
    generate_prefix_sharing,
    read_client_log,
    read_dataset,
    read_sharegpt,
    replay_prompts,
    write_dataset,
    write_stats,
)
from strata_bench.tokenizer import (
    BenchTokenizer,
    HFTokenizer,
    SimBenchTokenizer,
    extend_to_length,
    load_tokenizer,
    piece_ids,
    text_of_length,
)
from strata_bench.workloads import Fixed, Uniform

DATA = Path(__file__).parent / "data"
TOK = SimBenchTokenizer()


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


# --- tokenizer -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 17, 512, 4000])
def test_text_of_length_encodes_to_exactly_n_tokens(n: int) -> None:
    text = text_of_length(TOK, n, random.Random(n))
    assert len(TOK.encode(text)) == n


def test_text_of_length_is_deterministic_for_a_seed() -> None:
    assert text_of_length(TOK, 64, random.Random(3)) == text_of_length(TOK, 64, random.Random(3))
    assert text_of_length(TOK, 64, random.Random(3)) != text_of_length(TOK, 64, random.Random(4))


def test_extend_to_length_keeps_the_head_byte_for_byte() -> None:
    head = "System: answer briefly.\n"
    text = extend_to_length(TOK, head, 50, random.Random(0))
    assert text.startswith(head)
    assert len(TOK.encode(text)) == 50
    with pytest.raises(ValueError, match="more than"):
        extend_to_length(TOK, head, 2, random.Random(0))


def test_load_tokenizer_sim_is_the_simulator_tokenizer_without_specials() -> None:
    tok = load_tokenizer("sim")
    assert isinstance(tok, BenchTokenizer)
    assert tok.encode("hello world") == TOK.encode("hello world")
    assert 1 not in tok.encode("hello")  # no BOS
    assert tok.decode(tok.encode("a b c")) == "a b c"


def test_load_tokenizer_path_without_tokenizer_json_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        load_tokenizer(str(tmp_path))


def test_hf_tokenizer_without_the_tokenizers_package_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")

    def missing(name: str) -> None:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr("strata_bench.tokenizer.importlib.import_module", missing)
    with pytest.raises(ImportError, match="tokenizers"):
        load_tokenizer(str(tmp_path))


def test_hf_tokenizer_directory_gives_exact_lengths(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    words = [a + b for a, b in itertools.product("bcdfgklmnprst", "aeiou")]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece(prefix="##")
    tok.train_from_iterator([" ".join(words)] * 3, tokenizers.trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    hf = load_tokenizer(str(tmp_path))
    assert isinstance(hf, HFTokenizer)
    assert len(piece_ids(hf)) == len(words)
    for n in (1, 10, 300):
        assert len(hf.encode(text_of_length(hf, n, random.Random(n)))) == n


# --- AIBrix JSONL ----------------------------------------------------------------------


def test_plain_prompt_file_is_read_with_optional_completion() -> None:
    entries = read_dataset(DATA / "aibrix_plain.jsonl")
    assert entries == [
        PromptEntry(
            "Summarise the history of the printing press.", "Gutenberg built a movable-type press around 1440."
        ),
        PromptEntry("Translate 'good morning' into French."),
        PromptEntry("Write a haiku about caches.", "Warm keys wait in rows", output_tokens=16),
    ]


def test_sessioned_prompt_file_keeps_ids_turns_completions_and_think_times() -> None:
    entries = read_dataset(DATA / "aibrix_sessioned.jsonl")
    assert all(isinstance(e, SessionEntry) for e in entries)
    first, second, third = entries
    assert isinstance(first, SessionEntry)
    assert isinstance(second, SessionEntry)
    assert isinstance(third, SessionEntry)
    assert first.session_id == 0
    assert len(first.prompts) == 3
    assert first.completions is None
    assert second.completions == ("4",)
    assert third.session_id == "conv-x"
    assert third.think_times_s == (0.0, 2.5)


def test_shared_prompt_file_is_read_as_shared_entries() -> None:
    entries = read_dataset(DATA / "aibrix_shared.jsonl")
    assert [type(e) for e in entries] == [SharedPromptEntry] * 4
    assert [(e.prefix_group, e.config_id) for e in entries if isinstance(e, SharedPromptEntry)] == [
        (0, 0),
        (0, 0),
        (1, 0),
        (0, 1),
    ]


@pytest.mark.parametrize("name", ["aibrix_plain.jsonl", "aibrix_sessioned.jsonl", "aibrix_shared.jsonl"])
def test_every_kind_round_trips_through_write_and_read(name: str, tmp_path: Path) -> None:
    entries = read_dataset(DATA / name)
    assert write_dataset(entries, tmp_path / "out" / name) == len(entries)
    assert read_dataset(tmp_path / "out" / name) == entries
    lines = [json.loads(line) for line in (tmp_path / "out" / name).read_text().splitlines()]
    assert all(None not in obj.values() for obj in lines)  # unset optional keys are left out


def test_a_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        read_dataset(path)


def test_session_lists_must_align() -> None:
    with pytest.raises(ValueError, match="completions"):
        SessionEntry(0, ("a", "b"), completions=("x",))


# --- controlled prefix sharing ---------------------------------------------------------


def _by_group(entries: list[SharedPromptEntry]) -> dict[tuple[int, int], list[list[int]]]:
    groups: dict[tuple[int, int], list[list[int]]] = {}
    for e in entries:
        groups.setdefault((e.config_id, e.prefix_group), []).append(TOK.encode(e.prompt))
    return groups


def test_prefix_groups_share_exactly_their_prefix_tokens_with_fixed_lengths() -> None:
    config = PrefixSharingConfig(400, 0, 0.75, 0, num_samples_per_prefix=6, num_prefix=4)
    dataset = generate_prefix_sharing(TOK, [config], seed=7)
    assert len(dataset.entries) == 24
    for e in dataset.entries:
        assert e.token_count == 400
        assert e.shared_tokens == 300
        assert len(TOK.encode(e.prompt)) == 400
    groups = _by_group(dataset.entries)
    for members in groups.values():
        for a, b in itertools.combinations(members, 2):
            assert _common_prefix(a, b) == 300  # the prefix, no more
    for (_, ga), (_, gb) in itertools.combinations(groups.items(), 2):
        assert all(_common_prefix(a, b) == 0 for a in ga for b in gb)  # groups differ from token 0


def test_varying_shares_follow_each_samples_drawn_prefix_length() -> None:
    configs = [
        PrefixSharingConfig(300, 40, 0.6, 0.1, num_samples_per_prefix=8, num_prefix=3),
        PrefixSharingConfig(120, 10, 0.3, 0.05, num_samples_per_prefix=5, num_prefix=2),
    ]
    dataset = generate_prefix_sharing(TOK, configs, seed=1)
    assert [e.config_id for e in dataset.entries] == [0] * 24 + [1] * 10
    for e in dataset.entries:
        assert len(TOK.encode(e.prompt)) == e.token_count
    shared = {(e.config_id, e.prefix_group, e.prompt): e.shared_tokens or 0 for e in dataset.entries}
    by_key: dict[tuple[int, int], list[tuple[list[int], int]]] = {}
    for (config_id, group, prompt), p in shared.items():
        by_key.setdefault((config_id, group), []).append((TOK.encode(prompt), p))
    for members in by_key.values():
        for (a, pa), (b, pb) in itertools.combinations(members, 2):
            assert _common_prefix(a, b) == min(pa, pb)
    assert len({e.shared_tokens for e in dataset.entries}) > 5  # the proportion really varies


def test_stats_count_the_tokens_a_prefix_cache_can_reuse(tmp_path: Path) -> None:
    config = PrefixSharingConfig(200, 0, 0.5, 0, num_samples_per_prefix=5, num_prefix=2)
    dataset = generate_prefix_sharing(TOK, [config], seed=0)
    stats = dataset.stats["configs"][0]
    assert stats["prefix_length"] == 100
    assert stats["suffix_length"] == 100
    assert stats["total_tokens"] == 2000
    assert stats["cacheable_tokens"] == 2 * 4 * 100  # every sample after the first reuses 100
    assert stats["prefix_sharing_ratio"] == pytest.approx(0.4)
    write_stats(dataset, tmp_path / "stats.json")
    assert json.loads((tmp_path / "stats.json").read_text()) == dataset.stats


def test_prefix_sharing_is_deterministic_and_randomize_order_only_shuffles() -> None:
    config = PrefixSharingConfig(80, 5, 0.5, 0.05, num_samples_per_prefix=4, num_prefix=3)
    first = generate_prefix_sharing(TOK, [config], seed=11)
    assert generate_prefix_sharing(TOK, [config], seed=11).entries == first.entries
    assert generate_prefix_sharing(TOK, [config], seed=12).entries != first.entries
    shuffled = generate_prefix_sharing(TOK, [config], seed=11, randomize_order=True)
    assert shuffled.entries != first.entries
    assert sorted(shuffled.entries, key=lambda e: e.prompt) == sorted(first.entries, key=lambda e: e.prompt)


# --- multi-turn --------------------------------------------------------------------------


def test_multiturn_sessions_share_the_prefix_in_the_first_turn_only() -> None:
    config = MultiturnConfig(
        num_sessions_mean=5,
        num_sessions_std=0,
        num_turns_mean=3,
        num_turns_std=0,
        prompt_length_mean=40,
        prompt_length_std=10,
        shared_prefix_len=25,
        answer_lengths=Fixed(7),
        think_times_s=Uniform(0.5, 2.0, minimum=0),
    )
    sessions = generate_multiturn(TOK, config, seed=2)
    assert [s.session_id for s in sessions] == [0, 1, 2, 3, 4]
    firsts = [TOK.encode(s.prompts[0]) for s in sessions]
    prefix = firsts[0][:25]
    for ids in firsts:
        assert ids[:25] == prefix
        assert len(ids) > 25
    for s in sessions:
        assert len(s.prompts) == 3
        assert all(TOK.encode(p)[:25] != prefix for p in s.prompts[1:])
        assert s.completions is not None
        assert all(len(TOK.encode(c)) == 7 for c in s.completions)
        assert s.think_times_s is not None
        assert s.think_times_s[0] == 0.0
        assert all(0.5 <= t <= 2.0 for t in s.think_times_s[1:])
    assert generate_multiturn(TOK, config, seed=2) == sessions


def test_multiturn_without_answers_writes_aibrix_lines(tmp_path: Path) -> None:
    sessions = generate_multiturn(TOK, MultiturnConfig(num_sessions_mean=2, num_sessions_std=0), seed=0)
    write_dataset(sessions, tmp_path / "mt.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "mt.jsonl").read_text().splitlines()]
    assert [set(obj) for obj in lines] == [{"session_id", "prompts"}] * 2


# --- ShareGPT ----------------------------------------------------------------------------


def test_sharegpt_keeps_whole_conversations_whatever_the_role_order() -> None:
    sessions = list(read_sharegpt(DATA / "sharegpt.json"))
    assert [s.session_id for s in sessions] == ["conv-a", "conv-b", "conv-c"]
    a, b, c = sessions
    assert a.prompts == ("What is a KV cache?", "Why does it help?")
    assert a.completions == ("It stores attention keys and values.", "Prefill is skipped for cached tokens.")
    assert b.prompts == ("Tell me a joke.", "A short one please.")  # leading gpt dropped
    assert b.completions == ("", "Why did the GPU cross the road?\nTo reach the other batch.")
    assert c.prompts == ("Name a prime.", "Another?")  # blank turn and system skipped
    assert c.completions == ("7", "")


def test_sharegpt_limits() -> None:
    sessions = list(read_sharegpt(DATA / "sharegpt.json", max_sessions=2, max_turns=1, with_completions=False))
    assert [s.prompts for s in sessions] == [("What is a KV cache?",), ("Tell me a joke.",)]
    assert all(s.completions is None for s in sessions)


# --- client log replay -------------------------------------------------------------------


def test_aibrix_client_log_replays_logged_text_and_lengths() -> None:
    records = list(read_client_log(DATA / "aibrix_client_log.jsonl"))
    assert [r.at_s for r in records] == [0.0, 1.75]
    assert [(r.session_id, r.turn) for r in records] == [("s1", 0), ("s1", 1)]
    assert records[0].prompt == "Explain paged attention."
    prompts = list(replay_prompts(records, TOK))
    assert [p.output_tokens for p in prompts] == [9, 7]
    assert prompts[0].prompt == "Explain paged attention."
    assert prompts[0].prompt_tokens == len(TOK.encode("Explain paged attention."))
    assert len(list(read_client_log(DATA / "aibrix_client_log.jsonl", include_failed=True))) == 3


def test_strata_records_replay_with_exact_synthetic_prompts() -> None:
    records = list(read_client_log(DATA / "strata_records.jsonl"))
    assert [r.at_s for r in records] == [0.0, 1.0]
    assert records[1].prompt == "logged prompt text"
    assert records[1].session_id == "7"
    prompts = list(replay_prompts(records, TOK, seed=5, use_logged_text=False))
    assert [p.prompt_tokens for p in prompts] == [128, 64]
    assert [len(TOK.encode(p.prompt)) for p in prompts] == [128, 64]
    assert [p.output_tokens for p in prompts] == [3, 32]
    assert list(replay_prompts(records, TOK, seed=5, use_logged_text=False)) == prompts


def test_an_unknown_log_line_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"foo": 1}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:1"):
        list(read_client_log(path))
