"""The services `strata up` knows how to start, in start order.

A service is started only if its package is installed and runnable (`importlib` finds
`strata_<name>.__main__`); the ones later issues add simply appear. The controller needs a
Kubernetes API server and is never started locally.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.util import find_spec

__all__ = ["LOCAL_SERVICES", "ServiceSpec", "installed_services"]


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service process.

    Attributes:
        name: short name; also the settings prefix (`STRATA_<NAME>_`).
        module: the module run with `python -m`.
        needs_database: whether it gets `STRATA_DATABASE_URL`.
        extra_env: environment derived from the services started before it
            (name -> base URL), e.g. the agent learns the simulated engines.
    """

    name: str
    module: str
    needs_database: bool = False
    extra_env: Callable[[Mapping[str, str]], dict[str, str]] | None = None

    @property
    def env_prefix(self) -> str:
        """Prefix of the service's settings variables."""
        return f"STRATA_{self.name.upper()}_"


def _agent_env(started: Mapping[str, str]) -> dict[str, str]:
    """Point the engine agent at every simulated engine (read from enginesim's /engines)."""
    if "enginesim" not in started:
        return {}
    with urllib.request.urlopen(f"{started['enginesim']}/engines", timeout=5) as response:  # noqa: S310 - our URL
        engines = json.loads(response.read())["engines"]
    return {"STRATA_ENGINEAGENT_ENGINES": json.dumps(engines)}


LOCAL_SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("enginesim", "strata_enginesim"),
    ServiceSpec("engineagent", "strata_engineagent", extra_env=_agent_env),
    ServiceSpec("kvmeta", "strata_kvmeta"),
    ServiceSpec("cacheserver", "strata_cacheserver"),
    ServiceSpec("router", "strata_router"),
    ServiceSpec("gateway", "strata_gateway", needs_database=True),
    ServiceSpec("ledger", "strata_gateway.ledger", needs_database=True),
)


def installed_services() -> list[ServiceSpec]:
    """The local services that can run (`python -m <module>` finds a `__main__`), in start order."""
    found = []
    for spec in LOCAL_SERVICES:
        try:
            runnable = find_spec(f"{spec.module}.__main__") is not None
        except ModuleNotFoundError:  # the package itself is not installed
            runnable = False
        if runnable:
            found.append(spec)
    return found
