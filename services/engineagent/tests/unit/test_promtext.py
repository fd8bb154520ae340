"""The Prometheus text parser on a vLLM 0.32 /metrics page and on edge cases of the format."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from strata_engineagent.domain.promtext import parse_families

SAMPLE = (Path(__file__).parent.parent / "data" / "vllm_0_32_metrics.txt").read_text()


def test_reads_gauges_and_total_counters_from_vllm_page() -> None:
    found = parse_families(
        SAMPLE,
        {
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:kv_cache_usage_perc",
            "vllm:prompt_tokens_total",
            "vllm:prefix_cache_hits_total",
        },
    )

    assert found["vllm:num_requests_running"][0].value == 1.0
    assert found["vllm:num_requests_running"][0].labels == {"engine": "0", "model_name": "tiny"}
    assert found["vllm:num_requests_waiting"][0].value == 2.0
    assert found["vllm:kv_cache_usage_perc"][0].value == pytest.approx(0.0234375)
    assert found["vllm:prompt_tokens_total"][0].value == 6010.0
    assert found["vllm:prefix_cache_hits_total"][0].value == 2688.0


def test_created_samples_and_unrequested_families_are_left_out() -> None:
    found = parse_families(SAMPLE, {"vllm:prompt_tokens_total"})

    assert set(found) == {"vllm:prompt_tokens_total"}
    assert len(found["vllm:prompt_tokens_total"]) == 1  # not vllm:prompt_tokens_created, not _by_source


def test_info_gauge_labels_are_parsed() -> None:
    (sample,) = parse_families(SAMPLE, {"vllm:cache_config_info"})["vllm:cache_config_info"]

    assert sample.labels["block_size"] == "128"
    assert sample.labels["num_gpu_blocks"] == "4096"
    assert sample.labels["prefix_caching_hash_algo"] == "sha256_cbor"
    assert sample.labels["enable_prefix_caching"] == "True"


def test_histogram_series_can_be_asked_for_by_sample_name() -> None:
    found = parse_families(
        SAMPLE, {"vllm:time_to_first_token_seconds_count", "vllm:time_to_first_token_seconds_bucket"}
    )

    assert found["vllm:time_to_first_token_seconds_count"][0].value == 6.0
    buckets = found["vllm:time_to_first_token_seconds_bucket"]
    assert buckets[-1].labels["le"] == "+Inf"
    assert buckets[-1].value == 6.0


def test_labelled_series_keep_every_sample() -> None:
    samples = parse_families(SAMPLE, {"vllm:request_success_total"})["vllm:request_success_total"]

    by_reason = {s.labels["finished_reason"]: s.value for s in samples}
    assert by_reason["length"] == 6.0
    assert set(by_reason) == {"stop", "length", "abort", "error", "repetition"}


@pytest.mark.parametrize(
    ("line", "labels", "value"),
    [
        ("m 3", {}, 3.0),
        ("m{} 3", {}, 3.0),
        ('m{a="1"} 3 1712345678000', {"a": "1"}, 3.0),
        ('m{a="x\\"y",b="c\\\\d",c="l1\\nl2"} 4', {"a": 'x"y', "b": "c\\d", "c": "l1\nl2"}, 4.0),
        ('m{a="has } and , inside"} 5', {"a": "has } and , inside"}, 5.0),
        ('m{a="1",} 6', {"a": "1"}, 6.0),
        ('m{a="1"} +Inf', {"a": "1"}, math.inf),
        ('m{a="1"} -Inf', {"a": "1"}, -math.inf),
        ('m{a="1"} 7 # {trace_id="abc"} 1.0', {"a": "1"}, 7.0),
        ("m 1.5e+09", {}, 1.5e9),
    ],
)
def test_format_edge_cases(line: str, labels: dict[str, str], value: float) -> None:
    (sample,) = parse_families(line, {"m"})["m"]

    assert sample.labels == labels
    assert sample.value == value


def test_nan_is_a_value() -> None:
    (sample,) = parse_families("m NaN", ["m"])["m"]

    assert math.isnan(sample.value)


@pytest.mark.parametrize("line", ["m", "m{a=1} 3", "m notanumber", 'm{a="unterminated} 3'])
def test_malformed_lines_are_skipped(line: str) -> None:
    assert parse_families(f"{line}\nm 9", {"m"})["m"][-1].value == 9.0
    assert len(parse_families(f"{line}\nm 9", {"m"})["m"]) == 1


def test_name_prefixes_do_not_match_longer_names() -> None:
    text = "vllm:prompt_tokens_total_extra 1\nvllm:prompt_tokens_total 2\nvllm:prompt_tokens 3"

    found = parse_families(text, {"vllm:prompt_tokens_total"})

    assert [s.value for s in found["vllm:prompt_tokens_total"]] == [2.0]
