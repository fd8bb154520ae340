"""`strata` CLI end to end: demo, and up -> status -> down on a private state dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from strata_cli.cluster import read_state
from strata_testing import wait_until

pytestmark = pytest.mark.integration

STRATA = [sys.executable, "-m", "strata_cli.main"]


def _env(nats_url: str) -> dict[str, str]:
    return {**os.environ, "STRATA_NATS_URL": nats_url}


def test_demo_round_trips_every_contract(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STRATA_NATS_URL"}  # its own embedded NATS
    result = subprocess.run(
        [*STRATA, "demo", "--state-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NATS up" in result.stdout
    assert "12/12 contracts round-tripped" in result.stdout
    assert "usage ledger: 4/4 rows in PostgreSQL" in result.stdout
    assert "bad key -> 401" in result.stdout
    assert "FAILED" not in result.stdout
    assert result.stdout.rstrip().endswith("clean shutdown")
    assert read_state(tmp_path) is None


def test_up_status_down(tmp_path: Path, nats_url: str) -> None:
    up = subprocess.Popen(
        [*STRATA, "up", "--state-dir", str(tmp_path)],
        env=_env(nats_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: read_state(tmp_path), timeout=60, what="cluster state file")
        status = subprocess.run([*STRATA, "status", "--state-dir", str(tmp_path)], capture_output=True, text=True)
        assert status.returncode == 0
        assert nats_url in status.stdout
        again = subprocess.run([*STRATA, "up", "--state-dir", str(tmp_path)], capture_output=True, text=True)
        assert again.returncode == 1
        assert "already running" in again.stdout
        down = subprocess.run([*STRATA, "down", "--state-dir", str(tmp_path)], capture_output=True, text=True)
        assert down.returncode == 0, down.stdout
        assert up.wait(timeout=60) == 0
        output = up.stdout.read() if up.stdout else ""
        assert "stopped cleanly" in output
        assert read_state(tmp_path) is None
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_status_and_down_without_cluster(tmp_path: Path) -> None:
    for command in ("status", "down"):
        result = subprocess.run([*STRATA, command, "--state-dir", str(tmp_path)], capture_output=True, text=True)
        assert result.returncode == 1
        assert "no cluster running" in result.stdout


def test_keys_and_tenants_are_the_gateway_admin_tool() -> None:
    for command in ("keys", "tenants"):
        result = subprocess.run([*STRATA, command, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "create" in result.stdout
