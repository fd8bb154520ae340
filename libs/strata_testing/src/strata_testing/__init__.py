"""Strata's test fixtures and local servers (embedded NATS, PostgreSQL, polling helpers)."""

from strata_testing.nats import EmbeddedNats, nats_server_binary
from strata_testing.poll import PollTimeout, poll_until, wait_until
from strata_testing.ports import free_port, port_open

__all__ = ["EmbeddedNats", "PollTimeout", "free_port", "nats_server_binary", "poll_until", "port_open", "wait_until"]
