"""Scenario files (strict loading, the shipped set and its scaling), the client-side spread,
and end-to-end smoke runs against a real simulated fleet (``--quick`` and the demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from strata_bench.analysis import read_json, read_records, read_summary
from strata_bench.cli import main
from strata_bench.client import group_units
from strata_bench.demo import DEMO_SCENARIO, run_demo
from strata_bench.model import PlannedRequest, RequestRecord
from strata_bench.peers import PeerError
from strata_bench.scenarios import (
    DEFS_DIR,
    ScenarioError,
    build_plan,
    load_scenario,
    parse_scenario,
    prepare_dataset,
    quick_variant,
    scenario_names,
)
from strata_bench.scenarios.contenders import Contender, contenders_report, run_contenders
from strata_bench.scenarios.targets import Target, _to_sim, assign_units

SHIPPED = ("routing-compare", "seed-workload-1", "seed-workload-2", "seed-workload-3")
KV_BLOCK = 16  # block size of the llama-3.1-8b-a100 profile the seed workloads use


def _raw(name: str) -> dict[str, Any]:
    data = yaml.safe_load((DEFS_DIR / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_scenario_loads_and_is_listed(name: str) -> None:
    loaded = load_scenario(name)

    assert loaded.scenario.name == name
    assert loaded.scenario.version == 1
    assert name in scenario_names()
    assert len(loaded.sha256) == 64


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(colour="blue"), "unknown key 'colour' at colour"),
        (lambda d: d["workload"].update(qsp=[1.0]), "unknown key 'qsp' at workload.qsp"),
        (lambda d: d["fleet"].update(gpus=8), "unknown key 'gpus' at fleet.gpus"),
        (lambda d: d["dataset"]["configs"][0].update(prefix=1), "unknown key 'prefix'"),
        (lambda d: d["strategies"][0].update(weight=2), "unknown key 'weight' at strategies.0.weight"),
    ],
)
def test_unknown_keys_are_rejected_naming_the_key(mutate: Any, expected: str) -> None:
    data = _raw("seed-workload-1")
    mutate(data)

    with pytest.raises(ScenarioError, match=expected):
        parse_scenario(data, "seed-workload-1.yaml")


@pytest.mark.parametrize("version", [None, 2, "1"])
def test_a_missing_or_other_version_is_rejected(version: object) -> None:
    data = _raw("seed-workload-1")
    data["version"] = version

    with pytest.raises(ScenarioError, match="version must be 1"):
        parse_scenario(data)


def test_a_gateway_strategy_needs_its_header_value_and_a_file_error_names_the_file(tmp_path: Path) -> None:
    data = _raw("routing-compare")
    data["strategies"] = [{"name": "gw", "kind": "gateway"}]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))

    with pytest.raises(ScenarioError, match=r"mine\.yaml: strategies\.0.*routing_strategy is required"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'; shipped: routing-compare"):
        load_scenario("nope")


def test_seed_workloads_sweep_qps_03_to_43_in_steps_of_05() -> None:
    expected = [0.3, 0.8, 1.3, 1.8, 2.3, 2.8, 3.3, 3.8, 4.3]
    for name in ("seed-workload-1", "seed-workload-2", "seed-workload-3"):
        assert load_scenario(name).scenario.workload.rates() == expected


def test_seed_workload_footprints_keep_the_published_ratios() -> None:
    """W-1 fits in one engine's KV, W-2 is 8x W-1 with the same sharing, W-3 is ~8x the KV."""
    loaded = {n: load_scenario(n).scenario for n in ("seed-workload-1", "seed-workload-2", "seed-workload-3")}
    capacity = {n: (s.fleet.num_blocks or 0) * KV_BLOCK for n, s in loaded.items()}
    assert len(set(capacity.values())) == 1
    kv = capacity["seed-workload-1"]
    w1 = prepare_dataset(loaded["seed-workload-1"].dataset).stats
    w2 = prepare_dataset(loaded["seed-workload-2"].dataset).stats
    w3 = prepare_dataset(loaded["seed-workload-3"].dataset).stats

    assert 0.4 * kv < w1["unique_tokens"] < 0.75 * kv
    assert w2["unique_tokens"] == 8 * w1["unique_tokens"]
    assert w2["prefix_sharing_ratio"] == pytest.approx(w1["prefix_sharing_ratio"], abs=0.02)
    answers = loaded["seed-workload-3"].workload.output_tokens * (w3["turns"] - w3["sessions"])
    assert 7 * kv < w3["user_tokens"] + answers < 9 * kv


def test_quick_variant_shrinks_to_a_few_points_of_a_few_wall_seconds() -> None:
    for name in SHIPPED:
        full = load_scenario(name)
        quick = quick_variant(full)
        w, scale = quick.scenario.workload, quick.scenario.fleet.time_scale

        assert quick.quick
        assert quick.sha256 == full.sha256
        assert 1 <= len(w.rates()) <= 2
        assert (w.ramp_s + w.duration_s) / scale <= 5
        assert w.drain_s / scale <= 5


def test_multiturn_plan_counts_requests_and_keeps_sessions_whole() -> None:
    quick = quick_variant(load_scenario("seed-workload-3")).scenario
    plan = build_plan(quick, prepare_dataset(quick.dataset), 4.0)
    units = group_units(plan)

    assert all(p.session_id is not None and p.messages for p in plan)
    assert len({p.session_id for p in plan}) == len(units)
    assert all([p.turn for p in u] == list(range(len(u))) for u in units)


def _unit(i: int) -> list[PlannedRequest]:
    return [PlannedRequest(index=i, at_s=float(i), max_tokens=1, prompt="x")]


def test_round_robin_cycles_and_random_is_seeded_and_uses_every_engine() -> None:
    units = [_unit(i) for i in range(400)]

    assert assign_units(units, 3, "round-robin") == [i % 3 for i in range(400)]
    first, again = assign_units(units, 4, "random", seed=5), assign_units(units, 4, "random", seed=5)
    assert first == again != assign_units(units, 4, "random", seed=6)
    assert all(60 < first.count(e) < 140 for e in range(4))  # 100 expected; 4+ sd margins


def test_records_are_moved_to_the_common_origin_then_to_simulated_time() -> None:
    rec = RequestRecord(index=0, scheduled_s=1.0, sent_s=1.5, first_token_s=2.0, end_s=3.0, token_times_s=[2.0, 3.0])

    _to_sim(rec, offset=0.5, k=10.0, engine="sim-1")

    assert (rec.scheduled_s, rec.sent_s, rec.first_token_s, rec.end_s) == (15.0, 20.0, 25.0, 35.0)
    assert rec.token_times_s == [25.0, 35.0]
    assert rec.engine == "sim-1"


def test_quick_seed_workload_1_runs_end_to_end_on_a_real_fleet(tmp_path: Path) -> None:
    code = main(["scenario", "seed-workload-1", "--quick", "--out", str(tmp_path)])

    assert code == 0
    (out,) = tmp_path.iterdir()
    assert {p.name for p in out.iterdir()} >= {
        "scenario.yaml",
        "dataset.jsonl",
        "summary.json",
        "summary.md",
        "sweep.png",
    }
    summary = read_json(out / "summary.json")
    assert summary["quick"] is True
    assert len(summary["points"]) == 2
    for point in summary["points"]:
        run_dir = Path(point["run_dir"])
        run = read_json(run_dir / "run.json")
        records = read_records(run_dir)
        assert run["clock"].startswith("simulated")
        assert run["scenario"] == "seed-workload-1"
        assert len(records) == point["requests"] > 0
        assert read_summary(run_dir).ok == point["requests"]
        assert (run_dir / "cdf.png").stat().st_size > 0
        # W-1 fits in the KV cache and every group was warmed up: most prompt tokens hit.
        assert point["prefix_hit_ratio"] > 0.6
    assert "| vllm-prefix-caching | 0.8 |" in (out / "summary.md").read_text()


def test_demo_shows_more_prefix_hits_with_caching_on_than_off(tmp_path: Path) -> None:
    """The demo as `make demo` runs it. Robust by construction: with caching OFF the engines
    report no cached tokens at all; ON, every group's prefix is cached after its first miss
    on each engine (8 groups x 4 engines = 32 misses of ~160 requests)."""
    result = run_demo(tmp_path, log=lambda _: None)

    on, off = result.summaries["cache ON"], result.summaries["cache OFF"]
    assert result.ok
    assert off.prefix_hit_ratio == 0
    assert on.prefix_hit_ratio is not None
    assert on.prefix_hit_ratio > 0.4
    assert on.requests == off.requests > 100
    assert result.png.stat().st_size > 0
    assert "| prefix-hit ratio |" in result.table
    assert (result.out_dir / "cache-on" / "records.jsonl").is_file()
    assert DEMO_SCENARIO["fleet"]["engines"] == len(on.engines) == 4


def test_a_contender_that_cannot_start_is_reported_and_the_others_still_run(tmp_path: Path) -> None:
    small = {**DEMO_SCENARIO, "fleet": {"engines": 2, "time_scale": 10}}
    small["workload"] = {**DEMO_SCENARIO["workload"], "qps": [4], "duration_s": 5, "drain_s": 10}
    scenario = parse_scenario(small)

    def broken(*_: object) -> Target:
        raise PeerError("pip install broken-router==9 failed (exit 1): no matching distribution")

    runs = run_contenders(
        scenario,
        prepare_dataset(scenario.dataset),
        4,
        [Contender("direct", "direct"), Contender("broken", "broken", connect=broken), Contender("again", "again")],
        tmp_path,
        tolerate=(PeerError,),
        log=lambda _: None,
    )
    report = contenders_report(runs)

    assert [r.status for r in runs] == ["ok", runs[1].status, "ok"]
    assert runs[1].status.startswith("not run: pip install broken-router==9 failed")
    assert runs[1].summary is None
    assert "- broken: not run: pip install broken-router==9 failed (exit 1): no matching distribution" in report
    assert "| metric | direct | again | again / direct |" in report
    assert runs[0].summary is not None
    assert sum(runs[0].spread.values()) == runs[0].summary.requests  # the engines saw every request
