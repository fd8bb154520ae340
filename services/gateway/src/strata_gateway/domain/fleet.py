"""The gateway's in-memory picture of the engine fleet: registrations, load, local counters.

Owned by one gateway process and mutated only on its event loop: the registry adapter
feeds registrations and load snapshots, the request path counts its own in-flight
requests per engine and ejects engines that refused a connection. Reads are cheap
(called on every request); nothing here does I/O.

An engine is routable when its registration is fresh (heartbeat newer than
`stale_s`), its latest fresh load snapshot (if any) says healthy, and it is not
ejected. A model is known while any engine has a registration for it, fresh or not, so
a fleet that lost every engine answers 503 (no healthy engine), not 404.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

from strata_contracts.messages import EngineLoad, EngineRegistration

__all__ = ["EngineView", "Fleet", "ModelEntry"]


class EngineView(NamedTuple):
    """One routable engine as pickers see it.

    Attributes:
        engine_id: fleet-unique id.
        url: base URL without a trailing slash.
        model: served model.
        in_flight: requests this gateway has outstanding on it.
        running: engine-reported running requests (0 when no fresh load).
        waiting: engine-reported waiting requests (0 when no fresh load).
    """

    engine_id: str
    url: str
    model: str
    in_flight: int
    running: int
    waiting: int


@dataclass(frozen=True)
class ModelEntry:
    """A model served by at least one fresh engine (for /v1/models)."""

    model: str
    engines: int
    max_model_len: int
    created: int


class Fleet:
    """Registrations, load snapshots, per-engine in-flight counts and ejections.

    Args:
        stale_s: a registration older than this (heartbeat) is not routable.
        load_stale_s: a load snapshot older than this is ignored.
    """

    def __init__(self, stale_s: float, load_stale_s: float) -> None:
        self._stale_s = stale_s
        self._load_stale_s = load_stale_s
        self._engines: dict[str, EngineRegistration] = {}
        self._loads: dict[str, tuple[EngineLoad, float]] = {}  # engine -> (load, received at)
        self._in_flight: defaultdict[str, int] = defaultdict(int)
        self._ejected: dict[str, float] = {}  # engine -> until (monotonic)
        # model -> [(engine id, base url)] sorted by id; rebuilt only when an engine comes, goes
        # or changes model or URL (not on heartbeats), so a pick does not sort or format URLs
        self._by_model: dict[str, list[tuple[str, str]]] = {}

    # --- fed by the registry adapter -------------------------------------------------
    def upsert(self, registration: EngineRegistration) -> None:
        """Add or refresh an engine's registration."""
        before = self._engines.get(registration.engine_id)
        self._engines[registration.engine_id] = registration
        if before is None or (before.model, before.url) != (registration.model, registration.url):
            self._index()

    def remove(self, engine_id: str) -> None:
        """Forget an engine (its registry key was deleted)."""
        self._engines.pop(engine_id, None)
        self._loads.pop(engine_id, None)
        self._index()

    def _index(self) -> None:
        by_model: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for engine_id in sorted(self._engines):
            reg = self._engines[engine_id]
            by_model[reg.model].append((engine_id, str(reg.url).rstrip("/")))
        self._by_model = dict(by_model)

    def update_load(self, load: EngineLoad, received_at: float) -> None:
        """Record the latest load snapshot of an engine (`received_at`: monotonic seconds)."""
        self._loads[load.engine_id] = (load, received_at)

    # --- fed by the request path ---------------------------------------------------------
    def acquire(self, engine_id: str) -> int:
        """Count one more request on `engine_id`; returns the new count."""
        self._in_flight[engine_id] += 1
        return self._in_flight[engine_id]

    def release(self, engine_id: str) -> int:
        """Count one request less on `engine_id` (never below zero); returns the new count."""
        count = max(0, self._in_flight[engine_id] - 1)
        if count:
            self._in_flight[engine_id] = count
        else:
            self._in_flight.pop(engine_id, None)
        return count

    def eject(self, engine_id: str, until: float) -> None:
        """Give `engine_id` no picks until monotonic time `until`."""
        self._ejected[engine_id] = until

    # --- reads ------------------------------------------------------------------------------
    def knows_model(self, model: str) -> bool:
        """Whether any engine, routable or not, is registered for `model`."""
        return model in self._by_model

    def routable(
        self, model: str, *, now: float, mono: float, exclude: frozenset[str] = frozenset()
    ) -> list[EngineView]:
        """Engines of `model` that may take a request now, sorted by id.

        Args:
            model: requested model.
            now: wall-clock time (heartbeats are Unix times).
            mono: monotonic time (load snapshots and ejections).
            exclude: engines this request must not use (failed attempts).
        """
        views = []
        for engine_id, url in self._by_model.get(model, ()):
            reg = self._engines[engine_id]  # the latest heartbeat
            if engine_id in exclude or not self._usable(reg, now, mono):
                continue
            load = self._fresh_load(engine_id, mono)
            views.append(
                EngineView(
                    engine_id=engine_id,
                    url=url,
                    model=reg.model,
                    in_flight=self._in_flight.get(engine_id, 0),
                    running=load.running if load else 0,
                    waiting=load.waiting if load else 0,
                )
            )
        return views

    def url_of(self, engine_id: str) -> str | None:
        """Base URL of a registered engine (any state), or None."""
        reg = self._engines.get(engine_id)
        return str(reg.url).rstrip("/") if reg is not None else None

    def models(self, now: float) -> list[ModelEntry]:
        """Models with at least one fresh registration, sorted by name."""
        by_model: dict[str, list[EngineRegistration]] = defaultdict(list)
        for reg in self._engines.values():
            if now - reg.heartbeat_ts <= self._stale_s:
                by_model[reg.model].append(reg)
        return [
            ModelEntry(
                model=model,
                engines=len(regs),
                max_model_len=min(r.max_model_len for r in regs),
                created=int(min(r.heartbeat_ts for r in regs)),
            )
            for model, regs in sorted(by_model.items())
        ]

    def in_flight(self) -> dict[str, int]:
        """Requests outstanding per engine, every registered engine included (0 when idle)."""
        return {**dict.fromkeys(self._engines, 0), **self._in_flight}

    @property
    def engine_ids(self) -> list[str]:
        """Ids of every registered engine."""
        return sorted(self._engines)

    def _usable(self, reg: EngineRegistration, now: float, mono: float) -> bool:
        if now - reg.heartbeat_ts > self._stale_s:
            return False
        if self._ejected.get(reg.engine_id, 0.0) > mono:
            return False
        load = self._fresh_load(reg.engine_id, mono)
        return load is None or load.healthy

    def _fresh_load(self, engine_id: str, mono: float) -> EngineLoad | None:
        entry = self._loads.get(engine_id)
        if entry is None or mono - entry[1] > self._load_stale_s:
            return None
        return entry[0]
