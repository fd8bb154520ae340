"""Trace readers on checked-in samples of each public format, and hash-id prompts."""

from __future__ import annotations

import calendar
import gzip
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from strata_bench.tokenizer import SimBenchTokenizer
from strata_bench.traces import (
    AzureRow,
    BlockText,
    MooncakeRow,
    parse_timestamp,
    per_second_rates,
    read_azure,
    read_burstgpt,
    read_grafana_qps,
    read_mooncake,
    rebase,
    scale_time,
    truncate,
)

DATA = Path(__file__).parent / "data"
TOK = SimBenchTokenizer()


# --- timestamps --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-16 18:15:46.6805900", (calendar.timegm((2023, 11, 16, 18, 15, 46)), 0.68059)),
        ("2024-05-10 00:00:00.009930+00:00", (calendar.timegm((2024, 5, 10, 0, 0, 0)), 0.00993)),
        ("2024-05-10 00:00:01+00:00", (calendar.timegm((2024, 5, 10, 0, 0, 1)), 0.0)),
        ("2024-05-10T02:00:01.5+02:00", (calendar.timegm((2024, 5, 10, 0, 0, 1)), 0.5)),
        ("2024-05-09T19:00:00-05:00", (calendar.timegm((2024, 5, 10, 0, 0, 0)), 0.0)),
        ("2024-05-10T00:00:00Z", (calendar.timegm((2024, 5, 10, 0, 0, 0)), 0.0)),
        ("2024-10-1 00:00:00", (calendar.timegm((2024, 10, 1, 0, 0, 0)), 0.0)),
    ],
)
def test_parse_timestamp_accepts_every_trace_style(text: str, expected: tuple[int, float]) -> None:
    whole, frac = parse_timestamp(text)
    assert whole == expected[0]
    assert frac == pytest.approx(expected[1], abs=1e-12)


def test_parse_timestamp_rejects_other_text() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp("yesterday")


# --- Azure -------------------------------------------------------------------------------


def test_azure_2023_rows_keep_seven_digit_fractions() -> None:
    rows = list(read_azure(DATA / "azure_code_2023.csv"))
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [(4808, 10), (3180, 8), (110, 27), (7433, 14), (1, 1)]
    assert rows[0].at_s == 0.0
    assert rows[1].at_s == pytest.approx(4.314579, abs=1e-9)
    assert rows[4].at_s == pytest.approx(14.8194101, abs=1e-9)
    assert rows[0].epoch_s == pytest.approx(calendar.timegm((2023, 11, 16, 18, 15, 46)) + 0.68059, abs=1e-6)
    assert rows[0].num_images is None


def test_azure_2024_rows_with_and_without_fractions_and_zone() -> None:
    rows = list(read_azure(DATA / "azure_conv_2024.csv"))
    assert [r.at_s for r in rows] == pytest.approx([0.0, 0.0349, 0.99007, 1.49007, 3.24007], abs=1e-9)
    assert rows[-1].output_tokens == 0


def test_azure_multimodal_gzip_with_reordered_columns(tmp_path: Path) -> None:
    path = tmp_path / "mm.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("ContextTokens,TIMESTAMP,GeneratedTokens,NumImages\n900,2025-01-01 00:00:00.5,12,2\n")
        f.write("300,2025-01-01 00:00:02.0,4,0\n")
    rows = list(read_azure(path))
    assert rows == [
        AzureRow(0.0, 900, 12, rows[0].epoch_s, 2),
        AzureRow(1.5, 300, 4, rows[1].epoch_s, 0),
    ]


def test_azure_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("TIMESTAMP,ContextTokens\n2024-05-10 00:00:00,1\n")
    with pytest.raises(ValueError, match="GeneratedTokens"):
        list(read_azure(tmp_path / "x.csv"))


# --- BurstGPT ----------------------------------------------------------------------------


def test_burstgpt_v1_rows_and_failures() -> None:
    rows = list(read_burstgpt(DATA / "burstgpt_v1.csv"))
    assert [(r.at_s, r.model, r.input_tokens, r.output_tokens) for r in rows] == [
        (5.0, "ChatGPT", 472, 18),
        (45.0, "ChatGPT", 1087, 0),
        (118.0, "GPT-4", 417, 217),
        (124.5, "ChatGPT", 1360, 358),
    ]
    assert rows[1].failed
    assert rows[0].log_type == "Conversation log"
    assert rows[2].total_tokens == 634
    assert all(r.session_id is None and r.elapsed_s is None for r in rows)
    assert [r.at_s for r in read_burstgpt(DATA / "burstgpt_v1.csv", drop_failures=True)] == [5.0, 118.0, 124.5]
    assert [r.at_s for r in read_burstgpt(DATA / "burstgpt_v1.csv", models={"GPT-4"})] == [118.0]


def test_burstgpt_v3_columns_are_matched_by_name() -> None:
    rows = list(read_burstgpt(DATA / "burstgpt_v3.csv"))
    assert [(r.session_id, r.elapsed_s) for r in rows] == [("8a1f", 2.5), (None, 0.9), ("8a1f", 4.0), (None, 1.2)]
    assert [(r.model, r.input_tokens, r.output_tokens) for r in rows] == [
        ("ChatGPT", 120, 30),
        ("GPT-4", 64, 0),
        ("ChatGPT", 310, 95),
        ("GPT-4", 800, 12),
    ]
    kept = list(read_burstgpt(DATA / "burstgpt_v3.csv", drop_failures=True, log_types={"Conversation log"}))
    assert [r.at_s for r in kept] == [1.0, 7.0]


def test_burstgpt_shuffled_columns_read_the_same(tmp_path: Path) -> None:
    lines = (DATA / "burstgpt_v1.csv").read_text().splitlines()
    order = [5, 3, 0, 2, 1, 4]
    shuffled = [",".join(line.split(",")[i] for i in order) for line in lines]
    (tmp_path / "b.csv").write_text("\n".join(shuffled) + "\n")
    assert list(read_burstgpt(tmp_path / "b.csv")) == list(read_burstgpt(DATA / "burstgpt_v1.csv"))


def test_burstgpt_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("Timestamp,Model,Request tokens\n1,GPT-4,3\n")
    with pytest.raises(ValueError, match="response tokens"):
        list(read_burstgpt(tmp_path / "b.csv"))


# --- Mooncake / Bailian ------------------------------------------------------------------


def test_mooncake_rows_use_milliseconds_and_keep_hash_ids() -> None:
    rows = list(read_mooncake(DATA / "mooncake.jsonl"))
    assert [r.at_s for r in rows] == [0.0, 0.0, 0.027, 3.051, 3.051]
    assert rows[1] == MooncakeRow(0.0, 1500, 40, (0, 1, 3))
    assert all(len(r.hash_ids) == -(-r.input_tokens // 512) for r in rows)


def test_bailian_rows_use_seconds_and_session_fields() -> None:
    rows = list(read_mooncake(DATA / "bailian.jsonl"))
    assert [r.at_s for r in rows] == [0.5, 2.25, 3.0]
    assert [(r.chat_id, r.parent_chat_id, r.turn, r.kind) for r in rows] == [
        (10, -1, 1, "text"),
        (11, 10, 2, "text"),
        (12, -1, 1, "search"),
    ]


def test_equal_leading_hash_ids_give_equal_leading_tokens_per_block() -> None:
    rows = list(read_mooncake(DATA / "mooncake.jsonl"))
    blocks = BlockText(TOK, seed=3)
    prompts = [blocks.prompt(r.hash_ids, r.input_tokens) for r in rows]
    ids = [TOK.encode(p) for p in prompts]
    assert [len(x) for x in ids] == [r.input_tokens for r in rows]  # exact lengths, last block trimmed
    for (a, ra), (b, rb) in itertools.combinations(zip(ids, rows, strict=True), 2):
        for k, (ha, hb) in enumerate(zip(ra.hash_ids, rb.hash_ids, strict=False)):
            block_a, block_b = a[k * 512 : (k + 1) * 512], b[k * 512 : (k + 1) * 512]
            n = min(len(block_a), len(block_b))
            if ha == hb:
                assert block_a[:n] == block_b[:n]
            else:
                assert block_a[:n] != block_b[:n]
    assert prompts[3].startswith(prompts[0])  # [0,1,2] trimmed is a byte prefix of [0,1,2,6]
    assert ids[0][:1024] == ids[1][:1024]
    assert ids[0][1024] != ids[1][1024]
    assert ids[4] == blocks.block_ids(4)[:300]
    assert blocks.prompt_ids(rows[3].hash_ids, rows[3].input_tokens) == ids[3]


def test_block_text_is_deterministic_per_seed_and_block_size() -> None:
    a = BlockText(TOK, seed=1).prompt([7, 8], 1024)
    assert BlockText(TOK, seed=1, cache_blocks=1).prompt([7, 8], 1024) == a
    assert BlockText(TOK, seed=2).prompt([7, 8], 1024) != a
    small = BlockText(TOK, block_size=16, seed=1)
    rows = list(read_mooncake(DATA / "bailian.jsonl"))
    first, second = (TOK.encode(small.prompt(r.hash_ids, r.input_tokens)) for r in rows[:2])
    assert len(first) == 40
    assert len(second) == 70
    assert first[:40] == second[:40]  # 2.5 shared blocks of 16


def test_rows_with_too_few_hash_ids_are_padded_to_their_length() -> None:
    blocks = BlockText(TOK, block_size=16)
    ids = TOK.encode(blocks.prompt([1], 40))
    assert len(ids) == 40
    assert ids[:16] == blocks.block_ids(1)
    assert blocks.prompt([1], 40) == blocks.prompt([1], 40)


# --- Grafana -----------------------------------------------------------------------------


def test_grafana_maas_export_uses_total_and_expands_per_second() -> None:
    series = read_grafana_qps(DATA / "grafana_maas_traffic.csv")
    assert series.column == "Total"
    assert series.values == (100.0, 80.0, 0.0, 40.0)
    assert series.times_s == (0.0, 10.0, 20.0, 30.0)
    assert series.step_s == 10
    rates = per_second_rates(series, qps_scale=10)
    assert len(rates) == 40
    assert rates[:10] == [10.0] * 10
    assert rates[20:30] == [0.0] * 10
    assert rates[-1] == 4.0


def test_grafana_cloudide_export_uses_its_single_rate_column() -> None:
    series = read_grafana_qps(DATA / "grafana_cloudide_traffic.csv")
    assert series.column == "Rate"
    assert series.values == (6.0, 12.5, 3.0)
    assert series.step_s == 60
    assert series.start_epoch_s == calendar.timegm((2024, 10, 1, 0, 0, 0))
    assert len(per_second_rates(series)) == 180


def test_grafana_json_frame_and_row_list(tmp_path: Path) -> None:
    frame = read_grafana_qps(DATA / "grafana_frame.json")
    assert frame.values == (2.0, 4.0, 6.0)
    assert frame.times_s == (0.0, 5.0, 10.0)
    assert frame.column == "Value"
    rows = [{"Time": "2024-10-1 00:00:00", "Total": 5, "Success": 5}, {"Time": "2024-10-1 00:00:01", "Total": 7}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    assert read_grafana_qps(tmp_path / "rows.json").values == (5.0, 7.0)
    (tmp_path / "prom.json").write_text(json.dumps({"data": {"result": [{"values": [[1000, "1.5"], [1060, "2"]]}]}}))
    prom = read_grafana_qps(tmp_path / "prom.json")
    assert prom.values == (1.5, 2.0)
    assert prom.step_s == 60


def test_grafana_ambiguous_value_columns_need_a_name(tmp_path: Path) -> None:
    (tmp_path / "q.csv").write_text('"Time","A","B"\n2024-10-1 00:00:00,1,2\n')
    with pytest.raises(ValueError, match="several value columns"):
        read_grafana_qps(tmp_path / "q.csv")
    assert read_grafana_qps(tmp_path / "q.csv", column="B").values == (2.0,)


# --- time helpers ------------------------------------------------------------------------


def test_scale_rebase_and_truncate_compose() -> None:
    rows = list(read_burstgpt(DATA / "burstgpt_v1.csv"))
    rebased = list(rebase(rows))
    assert [r.at_s for r in rebased] == [0.0, 40.0, 113.0, 119.5]
    assert [r.at_s for r in scale_time(rebased, 0.5)] == [0.0, 20.0, 56.5, 59.75]
    assert [r.at_s for r in truncate(rows, max_s=113)] == [5.0, 45.0]
    assert [r.at_s for r in truncate(rows, max_n=3)] == [5.0, 45.0, 118.0]
    assert list(truncate(rows, max_n=0)) == []
    assert scale_time(rows, 2.0).__next__().input_tokens == 472
    with pytest.raises(ValueError, match="factor"):
        list(scale_time(rows, 0))


def test_truncate_stops_reading_at_the_first_row_past_the_window() -> None:
    def rows() -> Iterator[MooncakeRow]:
        yield MooncakeRow(0.0, 1, 1)
        yield MooncakeRow(5.0, 1, 1)
        yield MooncakeRow(11.0, 1, 1)
        raise AssertionError("read past the window")

    assert [r.at_s for r in truncate(rows(), max_s=10)] == [0.0, 5.0]
