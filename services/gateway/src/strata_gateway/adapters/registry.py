"""Keeps the :class:`Fleet` in step with the engine registry and the engines' load.

* Registry: a watch on every key of the `strata-engine-v1-registry` JetStream KV bucket
  (ordered consumer: it resumes by itself after a reconnect). A put is an
  EngineRegistration; a delete or purge removes the engine. The watcher is ready once
  the bucket's current values have been delivered.
* Load: a subscription to `strata.engine.v1.load.*` (EngineLoad, every 50-100 ms per
  engine), recorded with the monotonic time it arrived.

One instance per gateway process, started and stopped by the app's hooks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from nats.aio.msg import Msg
from pydantic import ValidationError

from strata_contracts import subjects
from strata_contracts.messages import EngineLoad, EngineRegistration, decode
from strata_gateway.domain.fleet import Fleet
from strata_runtime.messaging import Broker

__all__ = ["RegistryWatcher"]

_log = logging.getLogger(__name__)
_REMOVALS = frozenset({"DEL", "PURGE"})


class RegistryWatcher:
    """Feeds `fleet` from NATS.

    Args:
        broker: the gateway's NATS connection (the bucket must exist: ensure_event_plane).
        fleet: the snapshot to keep current.
    """

    def __init__(self, broker: Broker, fleet: Fleet) -> None:
        self._broker = broker
        self._fleet = fleet
        self._watcher: Any = None
        self._subscription: Any = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def ready(self) -> bool:
        """Whether the registry's current entries have all been loaded."""
        return self._ready.is_set()

    async def start(self, timeout: float = 10.0) -> None:
        """Subscribe to load, watch the registry, wait for its current entries."""
        self._subscription = await self._broker.subscribe(subjects.ENGINE_LOAD_ALL, EngineLoad, self._on_load)
        kv = await self._broker.kv(subjects.ENGINE_REGISTRY_BUCKET)
        self._watcher = await kv.watchall()
        self._task = asyncio.create_task(self._run(), name="gateway-registry-watch")
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        """Stop watching (safe to call when never started)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._watcher is not None:
            try:
                await self._watcher.stop()
            except Exception as exc:  # noqa: BLE001 - the connection may be gone already
                _log.debug("registry watcher stop: %r", exc)
            self._watcher = None
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except Exception as exc:  # noqa: BLE001 - as above
                _log.debug("load unsubscribe: %r", exc)
            self._subscription = None

    async def _run(self) -> None:
        async for entry in self._watcher:
            if entry is None:  # the bucket's current values have been delivered
                if not self._ready.is_set():
                    _log.info("engine registry loaded", extra={"engines": self._fleet.engine_ids})
                self._ready.set()
                continue
            try:
                self._apply(entry.key, entry.operation, entry.value)
            except Exception:  # noqa: BLE001 - one bad entry must not stop the watch
                _log.exception("registry entry %s not applied", entry.key)

    def _apply(self, key: str, operation: str | None, value: bytes | None) -> None:
        if operation in _REMOVALS:
            self._fleet.remove(key)
            _log.info("engine %s left the registry", key)
            return
        try:
            registration = decode(EngineRegistration, value or b"")
        except ValidationError as exc:
            _log.warning("invalid registration under key %s: %s", key, exc.errors(include_url=False)[0]["msg"])
            return
        if registration.engine_id != key:
            _log.warning("registration key %s holds engine %s: ignored", key, registration.engine_id)
            return
        if registration.engine_id not in self._fleet.engine_ids:
            _log.info("engine %s joined (%s, %s)", key, registration.model, registration.url)
        self._fleet.upsert(registration)

    async def _on_load(self, load: EngineLoad, _msg: Msg) -> None:
        self._fleet.update_load(load, time.monotonic())
