"""A service process end to end: --help, bad settings, readiness, SIGTERM drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from strata_testing import free_port, wait_until

SAMPLE = str(Path(__file__).with_name("sample_service.py"))


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, SAMPLE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _metrics(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_help_lists_settings() -> None:
    result = _run({}, "--help")
    assert result.returncode == 0
    assert "STRATA_SAMPLE_GREETING" in result.stdout
    assert "STRATA_SAMPLE_PORT" in result.stdout


def test_bad_setting_exits_non_zero_with_one_line() -> None:
    result = _run({"STRATA_SAMPLE_PORT": "abc"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "STRATA_SAMPLE_PORT='abc'" in lines[0]


@pytest.fixture
def sample(nats_url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    env = {**os.environ, "STRATA_SAMPLE_PORT": str(port), "STRATA_NATS_URL": nats_url, "STRATA_SAMPLE_USE_NATS": "1"}
    proc = subprocess.Popen([sys.executable, SAMPLE], env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(f"{base}/readyz")[0] == 200, timeout=30, what="sample ready")
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_probes_and_metrics(sample: tuple[subprocess.Popen[str], str]) -> None:
    _, base = sample
    assert _get(f"{base}/healthz") == (200, {"status": "ok"})
    assert _get(f"{base}/readyz") == (200, {"status": "ready"})
    assert "python_info" in _metrics(base)
    assert "strata_in_flight 0.0" in _metrics(base)


def test_sigterm_drains_in_flight_work_then_exits_zero(sample: tuple[subprocess.Popen[str], str]) -> None:
    proc, base = sample
    result: dict[str, object] = {}

    def slow_call() -> None:
        result["reply"] = _get(f"{base}/work?ms=1500")

    caller = threading.Thread(target=slow_call)
    caller.start()
    wait_until(lambda: "strata_in_flight 1.0" in _metrics(base), timeout=10, what="request in flight")
    proc.send_signal(signal.SIGTERM)
    caller.join(timeout=30)
    assert result["reply"] == (200, {"greeting": "hi"})
    assert proc.wait(timeout=30) == 0
    logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")] if proc.stderr else []
    messages = [entry["msg"] for entry in logs]
    assert "ready" in messages
    assert messages.index("stopping") < messages.index("drained") < messages.index("stopped")
