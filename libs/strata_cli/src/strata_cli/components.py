"""The services `strata up` knows how to start, in start order.

A service is started only if its package is installed (`importlib` finds
`strata_<name>`); the ones later issues add simply appear. The controller needs a
Kubernetes API server and is never started locally.
"""

from __future__ import annotations

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
    """

    name: str
    module: str
    needs_database: bool = False

    @property
    def env_prefix(self) -> str:
        """Prefix of the service's settings variables."""
        return f"STRATA_{self.name.upper()}_"


LOCAL_SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("enginesim", "strata_enginesim"),
    ServiceSpec("engineagent", "strata_engineagent"),
    ServiceSpec("kvmeta", "strata_kvmeta"),
    ServiceSpec("cacheserver", "strata_cacheserver"),
    ServiceSpec("router", "strata_router"),
    ServiceSpec("gateway", "strata_gateway", needs_database=True),
    ServiceSpec("ledger", "strata_gateway.ledger", needs_database=True),
)


def installed_services() -> list[ServiceSpec]:
    """The local services whose modules are importable, in start order."""
    found = []
    for spec in LOCAL_SERVICES:
        package = spec.module.split(".")[0]
        if find_spec(package) is not None and (package == spec.module or find_spec(spec.module) is not None):
            found.append(spec)
    return found
