"""Every installed service: `--help` lists its settings; a bad setting stops it with one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from strata_cli.components import ServiceSpec, installed_services

SERVICES = [spec for spec in installed_services() if "." not in spec.module]


def test_the_services_of_this_checkout_are_found() -> None:
    assert {"enginesim", "engineagent"} <= {spec.name for spec in SERVICES}


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_help_lists_the_services_settings(spec: ServiceSpec) -> None:
    result = subprocess.run([sys.executable, "-m", spec.module, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"{spec.env_prefix}PORT" in result.stdout


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_bad_port_exits_non_zero_naming_the_variable(spec: ServiceSpec) -> None:
    variable = f"{spec.env_prefix}PORT"
    result = subprocess.run(
        [sys.executable, "-m", spec.module],
        env={**os.environ, variable: "abc"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{variable}='abc'" in lines[0]
