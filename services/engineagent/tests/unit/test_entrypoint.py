"""`python -m strata_engineagent`: --help lists the settings, a bad one stops start-up; domain stays pure."""

from __future__ import annotations

import os
import subprocess
import sys

from strata_engineagent.settings import EngineAgentSettings
from strata_runtime.settings import settings_table


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_help_lists_every_setting() -> None:
    result = run("-m", "strata_engineagent", "--help")

    assert result.returncode == 0
    for env_name, _, _ in settings_table(EngineAgentSettings):
        assert env_name in result.stdout
    assert "STRATA_ENGINEAGENT_SCRAPE_INTERVAL_MS" in result.stdout


def test_bad_setting_exits_2_naming_the_variable() -> None:
    result = run("-m", "strata_engineagent", env={"STRATA_ENGINEAGENT_ENGINES": "[{"})

    assert result.returncode == 2
    assert "STRATA_ENGINEAGENT_ENGINES" in result.stderr
    assert "Traceback" not in result.stderr


def test_domain_imports_no_network_library() -> None:
    code = (
        "import sys\n"
        "import strata_engineagent.domain.discovery, strata_engineagent.domain.load\n"
        "import strata_engineagent.domain.registry, strata_engineagent.domain.sequence\n"
        "bad = {m.split('.')[0] for m in sys.modules} & {'aiohttp', 'nats', 'zmq', 'strata_runtime'}\n"
        "print(sorted(bad))\n"
    )

    result = run("-c", code)

    assert result.stdout.strip() == "[]", result.stderr
