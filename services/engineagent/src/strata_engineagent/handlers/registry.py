"""Registry heartbeats: EngineRegistration of every engine in the registry KV bucket.

One task for all engines of the agent. It beats every heartbeat interval and also at
once when a scrape loop reports a change (first contact, a return, a new cache
configuration). Discovery (`/v1/models`, `/version`) runs once per engine and again
after its key was deleted for silence. On graceful shutdown every key this agent
wrote is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

import nats.errors
from nats.js.kv import KeyValue

from strata_contracts.messages import EngineKind, encode
from strata_engineagent.adapters.engine_http import EngineClient, EngineUnreachable
from strata_engineagent.domain.discovery import (
    DiscoveryIncomplete,
    ModelInfo,
    build_registration,
    detect_kind,
    parse_models,
)
from strata_engineagent.domain.registry import EngineState, RegistryAction, registry_action
from strata_engineagent.telemetry import REGISTRY_WRITES

__all__ = ["RegistryHeartbeat"]

_log = logging.getLogger(__name__)
_KV_ERRORS = (nats.errors.Error, TimeoutError, OSError)


class RegistryHeartbeat:
    """Keeps the registry entries of the agent's engines; :meth:`run` is one task.

    Args:
        states: the engines' shared states.
        clients: each engine's HTTP client, by engine id.
        kv: the registry bucket.
        agent_id: written into every registration.
        interval: heartbeat period, seconds.
        ttl: registry TTL, seconds.
        discovery_timeout: deadline of each discovery request, seconds.
    """

    def __init__(
        self,
        states: Sequence[EngineState],
        clients: Mapping[str, EngineClient],
        kv: KeyValue,
        *,
        agent_id: str,
        interval: float,
        ttl: float,
        discovery_timeout: float,
    ) -> None:
        self._states = states
        self._clients = clients
        self._kv = kv
        self._agent_id = agent_id
        self._interval = interval
        self._ttl = ttl
        self._timeout = discovery_timeout
        self._wake = asyncio.Event()
        self._discovered: dict[str, tuple[ModelInfo | None, EngineKind]] = {}
        self._registered: set[str] = set()
        self._incomplete: dict[str, str] = {}

    def wake(self) -> None:
        """Ask for a heartbeat now (called by scrape loops on a change)."""
        self._wake.set()

    async def run(self) -> None:
        """Beat until cancelled."""
        while True:
            self._wake.clear()
            try:
                await self.beat()
            except Exception:  # noqa: BLE001 - a bug must not end the heartbeats
                _log.exception("registry heartbeat failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)

    async def beat(self) -> None:
        """One heartbeat for every engine."""
        await asyncio.gather(*(self._beat_one(state) for state in self._states))

    async def withdraw(self) -> None:
        """Delete every key this agent wrote (graceful shutdown)."""
        await asyncio.gather(*(self._delete(engine_id) for engine_id in sorted(self._registered)))

    async def _beat_one(self, state: EngineState) -> None:
        engine_id = state.spec.engine_id
        action = registry_action(state, registered=engine_id in self._registered, now=time.monotonic(), ttl=self._ttl)
        if action is RegistryAction.DELETE:
            _log.warning("engine %s silent for over %.1fs: registry key deleted", engine_id, self._ttl)
            self._discovered.pop(engine_id, None)
            await self._delete(engine_id)
        elif action is RegistryAction.PUT:
            await self._put(state)

    async def _put(self, state: EngineState) -> None:
        engine_id = state.spec.engine_id
        try:
            models, kind = await self._discover(state)
            registration = build_registration(
                state.spec,
                models=models,
                cache=state.cache,
                kind=kind,
                agent_id=self._agent_id,
                heartbeat_ts=time.time(),
            )
        except (DiscoveryIncomplete, EngineUnreachable, ValueError) as exc:
            REGISTRY_WRITES.labels(engine_id, "incomplete").inc()
            if self._incomplete.get(engine_id) != str(exc):
                _log.error("cannot register engine %s: %s", engine_id, exc)
                self._incomplete[engine_id] = str(exc)
            return
        self._incomplete.pop(engine_id, None)
        try:
            await self._kv.put(engine_id, encode(registration))
        except _KV_ERRORS as exc:
            REGISTRY_WRITES.labels(engine_id, "failed").inc()
            _log.warning("registry put of %s failed: %r", engine_id, exc)
            return
        if engine_id not in self._registered:
            _log.info("engine %s registered", engine_id, extra={"registration": registration.model_dump(mode="json")})
        self._registered.add(engine_id)
        REGISTRY_WRITES.labels(engine_id, "put").inc()

    async def _discover(self, state: EngineState) -> tuple[ModelInfo | None, EngineKind]:
        spec = state.spec
        known = self._discovered.get(spec.engine_id)
        if known is not None:
            return known
        client = self._clients[spec.engine_id]
        models = None
        if spec.model is None or spec.max_model_len is None or spec.kind is None:
            models = parse_models(await client.models(self._timeout))
        kind = spec.kind or detect_kind(models, await client.version(self._timeout))
        self._discovered[spec.engine_id] = (models, kind)
        return models, kind

    async def _delete(self, engine_id: str) -> None:
        try:
            await self._kv.delete(engine_id)
        except _KV_ERRORS as exc:
            REGISTRY_WRITES.labels(engine_id, "failed").inc()
            _log.warning("registry delete of %s failed: %r", engine_id, exc)
            return
        self._registered.discard(engine_id)
        REGISTRY_WRITES.labels(engine_id, "delete").inc()
