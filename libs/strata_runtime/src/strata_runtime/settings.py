"""Service settings: environment variables `STRATA_<SVC>_<NAME>`, checked at start-up.

Every service declares one subclass of :class:`ServiceSettings` with its own prefix::

    class RouterSettings(ServiceSettings):
        model_config = service_config("router")    # env prefix STRATA_ROUTER_
        pick_timeout_ms: int = Field(20, description="...")

Settings shared by the whole cluster (NATS URL, database URL) are also read from the
unprefixed `STRATA_NATS_URL` / `STRATA_DATABASE_URL`; the prefixed form wins.
A bad value raises :class:`SettingsError`, whose message is one line naming the
environment variable, the value and the reason.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

__all__ = ["ServiceSettings", "SettingsError", "env_name", "load_settings", "service_config", "settings_table"]

S = TypeVar("S", bound="ServiceSettings")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class SettingsError(ValueError):
    """A setting has a bad value; the message names its environment variable."""


def service_config(service: str) -> SettingsConfigDict:
    """The pydantic-settings config of service `service`: prefix `STRATA_<SERVICE>_`."""
    return SettingsConfigDict(env_prefix=f"STRATA_{service.upper()}_", extra="ignore", frozen=True)


class ServiceSettings(BaseSettings):
    """Settings every service has."""

    model_config = service_config("service")
    shared_fields: ClassVar[tuple[str, ...]] = ("nats_url",)
    """Fields also read from the unprefixed `STRATA_<NAME>` variable (cluster-wide)."""

    host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds.")
    port: int = Field(default=0, ge=0, lt=65536, description="HTTP port (0 = pick a free one).")
    log_level: LogLevel = Field(default="INFO", description="Minimum log level.")
    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="NATS server URL (also read from STRATA_NATS_URL).",
    )
    shutdown_grace_s: float = Field(
        default=20.0, gt=0, description="Time to drain in-flight work after SIGTERM before exiting."
    )
    instance_id: str = Field(default="", description="Replica id in logs and NATS client names (default: host+pid).")


def env_name(cls: type[ServiceSettings], field: str) -> str:
    """The environment variable that sets `field` of `cls`."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    return f"{prefix}{field}".upper()


def load_settings(cls: type[S], origins: dict[str, str] | None = None, **overrides: Any) -> S:
    """Build `cls` from the environment (and `overrides`), or raise a one-line SettingsError.

    Args:
        cls: the settings class.
        origins: how to name an overridden field in errors (e.g. its command-line flag).
        overrides: field values that win over the environment.
    """
    sources: dict[str, str] = {f: name for f, name in (origins or {}).items() if f in overrides}
    for field in cls.shared_fields:
        shared = f"STRATA_{field.upper()}"
        if field not in overrides and env_name(cls, field) not in os.environ and shared in os.environ:
            overrides[field] = os.environ[shared]
            sources[field] = shared
    try:
        return cls(**overrides)
    except SourceError as exc:  # a complex value (list, dict) that is not valid JSON
        raise SettingsError(f"invalid setting {_source_error(cls, exc)}") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            name = sources.get(field) or (env_name(cls, field) if field in cls.model_fields else field)
            value = error.get("input")
            problems.append(f"{name}={value!r}: {error['msg']}")
        raise SettingsError("invalid setting " + "; ".join(problems)) from None


def _source_error(cls: type[ServiceSettings], exc: SourceError) -> str:
    """`error parsing value for field "engines" from source ...` -> `STRATA_X_ENGINES: not valid JSON`."""
    text = str(exc)
    for name in cls.model_fields:
        if f'"{name}"' in text:
            return f"{env_name(cls, name)}: not valid JSON ({text})"
    return text


def settings_table(cls: type[ServiceSettings]) -> list[tuple[str, str, str]]:
    """(environment variable, default, description) of every setting, for --help and READMEs."""
    rows = []
    for name, info in cls.model_fields.items():
        rows.append((env_name(cls, name), _default(info), info.description or ""))
    return rows


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "(required)"
    default = info.get_default(call_default_factory=True)
    return repr(default.value if isinstance(default, Enum) else default)
