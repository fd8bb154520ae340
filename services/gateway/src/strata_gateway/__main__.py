"""`python -m strata_gateway`: run the gateway (settings from the environment or --flags)."""

from __future__ import annotations

from strata_gateway.app import build_app
from strata_gateway.settings import FLAGS, GatewaySettings
from strata_runtime.service import service_main


def main() -> None:
    """Run the gateway service until SIGTERM, then drain in-flight streams and exit."""
    service_main("gateway", GatewaySettings, build_app, flags=FLAGS, loop="uvloop")


if __name__ == "__main__":
    main()
