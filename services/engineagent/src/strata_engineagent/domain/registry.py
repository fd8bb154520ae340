"""Per-engine liveness as the agent sees it, and when its registry key is put or deleted.

The scrape loop updates an :class:`EngineState` after every scrape; the heartbeat loop
reads it. A registration is written only for an engine that answered a scrape within
the registry TTL; an engine silent for longer has its key deleted (routers drop it at
once instead of waiting for the heartbeat to go stale) and is re-discovered and put
back when it answers again, since it may have come back with another configuration.

    never scraped OK ─▶ WAIT        scraped OK within TTL ─▶ PUT (heartbeat)
    silent > TTL, key present ─▶ DELETE        silent > TTL, no key ─▶ WAIT
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from strata_engineagent.domain.load import CacheConfig
from strata_engineagent.domain.spec import EngineSpec

__all__ = ["EngineState", "RegistryAction", "registry_action"]


class RegistryAction(StrEnum):
    """What the heartbeat does for one engine."""

    PUT = "put"
    DELETE = "delete"
    WAIT = "wait"


@dataclass
class EngineState:
    """What the scrape loop learned about one engine (monotonic times, seconds).

    Attributes:
        spec: the engine's settings.
        scrapes_ok: successful scrapes so far.
        last_ok: monotonic time of the latest successful scrape.
        healthy: whether the latest scrape succeeded (None before the first).
        cache: the latest `vllm:cache_config_info`, if the engine exports it.
    """

    spec: EngineSpec
    scrapes_ok: int = 0
    last_ok: float | None = None
    healthy: bool | None = None
    cache: CacheConfig | None = None

    def scrape_ok(self, now: float, cache: CacheConfig | None, ttl: float) -> bool:
        """Record a successful scrape; True when the registry should hear of it now.

        That is: the first success, a return after more than `ttl` of silence, or a
        changed cache configuration.
        """
        changed = self.last_ok is None or now - self.last_ok > ttl or (cache is not None and cache != self.cache)
        self.scrapes_ok += 1
        self.last_ok = now
        self.healthy = True
        if cache is not None:
            self.cache = cache
        return changed

    def scrape_failed(self) -> bool:
        """Record a failed scrape; True when it is the first one, or the first after a success."""
        news = self.healthy is not False
        self.healthy = False
        return news


def registry_action(state: EngineState, *, registered: bool, now: float, ttl: float) -> RegistryAction:
    """The heartbeat's action for `state`'s engine at monotonic time `now`."""
    if state.last_ok is None:
        return RegistryAction.WAIT
    if now - state.last_ok > ttl:
        return RegistryAction.DELETE if registered else RegistryAction.WAIT
    return RegistryAction.PUT
