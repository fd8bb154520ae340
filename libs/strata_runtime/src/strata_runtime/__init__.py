"""Strata service runtime: settings, logging, tracing, NATS, probes, graceful shutdown."""

from strata_runtime.messaging import Broker
from strata_runtime.probes import HttpServer, Probes
from strata_runtime.service import Service, run_service, service_main
from strata_runtime.settings import ServiceSettings, SettingsError, load_settings, service_config
from strata_runtime.shutdown import GracefulShutdown, InFlight

__all__ = [
    "Broker",
    "GracefulShutdown",
    "HttpServer",
    "InFlight",
    "Probes",
    "Service",
    "ServiceSettings",
    "SettingsError",
    "load_settings",
    "run_service",
    "service_config",
    "service_main",
]
