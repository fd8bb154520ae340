"""The simulated fleet as a child process (start, readiness, stop, settings) and the peer
routers' plumbing (venv cache, launch commands, start failures) without downloading anything."""

from __future__ import annotations

import json
import stat
import sys
import urllib.request
from pathlib import Path

import pytest

from strata_bench.fleet import FleetConfig, FleetError, engine_request_counts, pick_port, simulated_fleet
from strata_bench.peers import (
    PEERS,
    PeerError,
    PeerInstall,
    PeerSpec,
    ensure_peer_venv,
    peer_venv_dir,
    router_command,
    running_router,
)
from strata_testing.ports import port_open


def _complete(url: str, prompt: str) -> dict[str, object]:
    body = json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": 2, "ignore_eos": True}).encode()
    request = urllib.request.Request(f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    assert isinstance(answer, dict)
    return answer


def _cached(answer: dict[str, object]) -> int:
    usage = answer["usage"]
    assert isinstance(usage, dict)
    return int(usage["prompt_tokens_details"]["cached_tokens"])


def test_config_maps_to_enginesim_settings() -> None:
    env = FleetConfig(engines=3, profile="tiny-cpu", time_scale=4, prefix_caching=False, num_blocks=64).env(20001)

    assert env["STRATA_ENGINESIM_PORT"] == "20001"
    assert env["STRATA_ENGINESIM_ENGINES"] == "3"
    assert env["STRATA_ENGINESIM_TIME_SCALE"] == "4"
    assert env["STRATA_ENGINESIM_ENABLE_PREFIX_CACHING"] == "false"
    assert env["STRATA_ENGINESIM_NUM_BLOCKS"] == "64"
    assert env["STRATA_ENGINESIM_KV_EVENTS"] == "false"
    assert "STRATA_ENGINESIM_BLOCK_SIZE" not in env  # unset: the profile's value


def test_picked_ports_are_free_and_below_the_ephemeral_range() -> None:
    ports = {pick_port() for _ in range(20)}

    assert all(20000 <= p < 32000 for p in ports)


@pytest.mark.parametrize(("caching", "hit"), [(True, True), (False, False)])
def test_fleet_serves_every_engine_and_honours_prefix_caching(
    caching: bool, hit: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATA_ENGINESIM_NUM_BLOCKS", "not-a-number")  # not inherited: the config is the fleet
    prompt = " ".join(f"w{i}" for i in range(400))
    with simulated_fleet(FleetConfig(engines=2, prefix_caching=caching, time_scale=10)) as fleet:
        assert [e.engine_id for e in fleet.engines] == ["sim-0", "sim-1"]
        assert len(set(fleet.engine_urls)) == 2
        first = _complete(fleet.engine_urls[0], prompt)
        second = _complete(fleet.engine_urls[0], prompt)
        _complete(fleet.engine_urls[1], "hello")
        counts = engine_request_counts(fleet.engines)

        assert _cached(first) == 0
        assert (_cached(second) > 0) is hit
        assert counts == {"sim-0": 2, "sim-1": 1}
        process = fleet.process
    assert process.poll() == 0  # stopped cleanly by SIGTERM
    assert fleet.stop() == 0  # idempotent


def test_a_fleet_that_cannot_start_raises_with_its_own_message() -> None:
    with (
        pytest.raises(FleetError, match="unknown latency profile 'no-such-profile'"),
        simulated_fleet(FleetConfig(profile="no-such-profile")),
    ):
        pass


def test_router_commands_follow_the_reference_launch_lines() -> None:
    workers = ["http://127.0.0.1:18001", "http://127.0.0.1:18002"]

    sglang = router_command(PEERS["sglang-router"], "/v/bin/sglang-router", workers, port=23101, prometheus_port=23201)
    vllm = router_command(
        PEERS["vllm-router"], "/v/bin/vllm-router", workers, port=23102, prometheus_port=23202, policy="round_robin"
    )

    assert sglang == [
        "/v/bin/sglang-router", "launch", "--host", "127.0.0.1", "--port", "23101",
        "--worker-urls", *workers, "--policy", "cache_aware",
        "--prometheus-host", "127.0.0.1", "--prometheus-port", "23201", "--log-level", "warn",
    ]  # fmt: skip
    assert vllm == [
        "/v/bin/vllm-router", "--host", "127.0.0.1", "--port", "23102",
        "--worker-urls", *workers, "--policy", "round_robin",
        "--prometheus-host", "127.0.0.1", "--prometheus-port", "23202", "--log-level", "warning",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="at least one worker"):
        router_command(PEERS["vllm-router"], "x", [], port=1, prometheus_port=2)


def test_peer_venvs_live_outside_the_clone_keyed_by_the_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATA_CACHE_DIR", str(tmp_path))
    spec = PEERS["sglang-router"]
    other = PeerSpec("sglang-router", "sglang-router==0.3.1", "sglang-router")

    path = peer_venv_dir(spec)

    assert path.parent == tmp_path
    assert path.name.startswith("peers-sglang-router-")
    assert peer_venv_dir(spec) == path != peer_venv_dir(other)


def test_a_complete_venv_is_reused_without_installing(tmp_path: Path) -> None:
    spec = PEERS["vllm-router"]
    venv = peer_venv_dir(spec, tmp_path)
    venv.mkdir(parents=True)
    (venv / ".complete").write_text(json.dumps({"requirement": spec.requirement, "version": "0.1.17", "install_s": 31}))

    install = ensure_peer_venv(spec, cache_dir=tmp_path)

    assert install == PeerInstall(venv, "0.1.17", 31.0, created=False)


def _fake_router(tmp_path: Path, script: str) -> tuple[PeerSpec, PeerInstall]:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    exe = bin_dir / "fake-router"
    exe.write_text(f"#!{sys.executable}\n{script}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return PeerSpec("fake", "fake==1", "fake-router"), PeerInstall(tmp_path / "venv", "1", 0.0, created=False)


def test_a_router_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    spec, install = _fake_router(tmp_path, "import sys; print('bad flag --policy'); sys.exit(3)")

    with (
        pytest.raises(PeerError, match=r"(?s)fake exited with code 3.*bad flag --policy"),
        running_router(spec, install, ["http://127.0.0.1:1"], log_path=tmp_path / "router.log"),
    ):
        pass


def test_a_started_router_is_yielded_and_stopped(tmp_path: Path) -> None:
    server = (
        "import http.server, sys\n"
        "port = int(sys.argv[sys.argv.index('--port') + 1])\n"
        "http.server.HTTPServer(('127.0.0.1', port), http.server.SimpleHTTPRequestHandler).serve_forever()"
    )
    spec, install = _fake_router(tmp_path, server)

    with running_router(spec, install, ["http://127.0.0.1:1"], log_path=tmp_path / "router.log") as url:
        host, port = url.removeprefix("http://").split(":")
        assert port_open(host, int(port))

    assert not port_open(host, int(port))  # terminated and waited for on exit
    assert (tmp_path / "router.log").read_text().startswith(f"$ {install.executable(spec)} --host 127.0.0.1")
