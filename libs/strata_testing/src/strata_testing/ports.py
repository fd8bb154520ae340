"""Free TCP ports on the loopback interface (re-exported from strata_runtime.net)."""

from strata_runtime.net import free_port, port_open

__all__ = ["free_port", "port_open"]
