"""NatsLimiter: RPM / TPM / concurrency limits shared by all gateway replicas over NATS.

State lives in the JetStream KV bucket :data:`LIMITS_BUCKET` (memory storage, one JSON
document per scope, see domain/limits.py) and changes only by compare-and-set
(`kv.update(key, value, last=revision)`). Each scope has one *pump* per replica: requests
arriving while a write is in flight are decided together by the next read-modify-write
(group commit), so a hot key costs one round trip per batch, not per request; releases and
settled tokens ride on the same writes, and a heartbeat renews this replica's lease.

    admit ─▶ per scope: queue ─▶ pump: get (or cached) ─▶ admit_batch ─▶ kv.update(last=rev)
                                                  ▲ wrong revision: re-read, retry ┘

Accuracy while NATS answers: every decision sees the latest counts, so RPM and concurrency
are exact across any number of replicas; TPM is post-paid (a request admitted under the
limit may overshoot it by its own tokens); a write that times out after reaching the
server may count one request twice.

Failure mode: when NATS is disconnected, slower than `op_timeout_s` or contended beyond
`max_attempts`, the limiter **fails open to per-replica enforcement**: it decides from
this replica's own counts (never stricter than the shared truth), counts
`strata_gateway_limiter_fail_open_total{reason}` and logs at most every 10 s, so N
replicas admit at most N × the limit. Counts made meanwhile are pushed to the shared
document once NATS is back (within the same window). A restarted NATS has lost the
(memory) bucket: the next decision binds it again, re-creating it (at most once a second).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.js.api import StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoStreamResponseError, NotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from strata_gateway.domain import limits as rl
from strata_gateway.domain.ports import Admission, Principal
from strata_runtime import Broker

__all__ = ["LIMITS_BUCKET", "NatsLimiter"]

LIMITS_BUCKET = "strata-gateway-v1-limits"
"""JetStream KV bucket of the shared counters (gateway-private); key = `key.<id>` / `tenant.<id>`."""

_log = logging.getLogger(__name__)
_REBIND_INTERVAL_S = 1.0  # a lost bucket is looked up (and re-created) at most this often
REJECTED = Counter("strata_gateway_limiter_rejected_total", "Requests refused with 429.", ["scope", "limit"])
FAIL_OPEN = Counter(
    "strata_gateway_limiter_fail_open_total",
    "Admission decisions made from this replica's counts only because shared state was unavailable.",
    ["reason"],
)
CONFLICTS = Counter("strata_gateway_limiter_cas_conflicts_total", "Compare-and-set retries on the limits bucket.")


class _Unavailable(Exception):
    """Shared state could not be read or written in time; `args[0]` is the reason."""


class _State:
    """One scope on this replica: its counts, the requests waiting for the pump, the cached document."""

    def __init__(self, scope: rl.Scope) -> None:
        self.scope = scope
        self.counts = rl.ReplicaCounts()
        self.waiters: list[asyncio.Future[rl.Reject | None]] = []
        self.pump: asyncio.Task[None] | None = None
        self.cached: tuple[rl.ScopeDoc, int] | None = None
        self.last_used = 0.0

    def dirty(self, now: float) -> bool:
        return self.counts.dirty(self.scope.limits, now)


class _Admitted:
    """An admission over some scopes; settle and release are idempotent and never block."""

    __slots__ = ("_limiter", "_released", "_settled", "_states")

    def __init__(self, limiter: NatsLimiter, states: list[_State]) -> None:
        self._limiter, self._states = limiter, states
        self._settled = self._released = False

    def settle(self, prompt_tokens: int, completion_tokens: int) -> None:
        if not self._settled:
            self._settled = True
            for state in self._states:
                self._limiter._settle(state, max(0, prompt_tokens) + max(0, completion_tokens))

    def release(self) -> None:
        if not self._released:
            self._released = True
            for state in self._states:
                self._limiter._release(state)


class NatsLimiter:
    """The gateway's Limiter (domain.ports) backed by a JetStream KV bucket.

    Args:
        broker: this replica's NATS connection (owned by the caller).
        replica_id: unique id of this gateway replica (its in-flight entries are keyed by it).
        window_s: RPM/TPM window length (60 = per minute).
        lease_s: lifetime of this replica's in-flight counts without renewal (a dead
            replica's slots come back after at most this long).
        op_timeout_s: deadline of one shared decision before failing open.
        max_attempts: compare-and-set retries before failing open.
        clock: Unix time source (injectable for tests).
    """

    def __init__(
        self,
        broker: Broker,
        replica_id: str,
        *,
        window_s: float = 60.0,
        lease_s: float = 30.0,
        op_timeout_s: float = 0.25,
        max_attempts: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not replica_id:
            raise ValueError("replica_id must be non-empty and unique per gateway replica")
        self._broker, self._replica = broker, replica_id
        self._window_s, self._lease_s = window_s, lease_s
        self._timeout, self._attempts, self._clock = op_timeout_s, max_attempts, clock
        self._kv: KeyValue | None = None
        self._states: dict[str, _State] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._warned_at = 0.0
        self._rebind_at = 0.0

    async def start(self) -> None:
        """Bind the bucket (fail open until it can be) and start the lease heartbeat."""
        await self._bind()
        self._heartbeat = asyncio.create_task(self._beat(), name="limiter-heartbeat")

    async def close(self) -> None:
        """Stop the heartbeat, push what is still unwritten (bounded), stop the pumps."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        now = self._clock()
        for state in self._states.values():
            if state.pump is None and state.dirty(now):
                self._kick(state)
        pumps = [s.pump for s in self._states.values() if s.pump is not None]
        if pumps:
            await asyncio.wait(pumps, timeout=self._timeout * 2)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    async def admit(self, principal: Principal) -> Admission:
        """Admit one request of `principal` in its key and tenant scopes, or raise the 429."""
        scopes = rl.scopes_of(principal)
        states = [self._state(scope) for scope in scopes]
        futures = []
        for state in states:
            future: asyncio.Future[rl.Reject | None] = asyncio.get_running_loop().create_future()
            state.waiters.append(future)
            self._kick(state)
            futures.append(future)
        results = await asyncio.gather(*futures)
        refused = [(state, reject) for state, reject in zip(states, results, strict=True) if reject is not None]
        if refused:
            for state, reject in zip(states, results, strict=True):
                if reject is None:
                    self._refund(state)
            state, reject = refused[0]
            REJECTED.labels(state.scope.kind, reject.kind).inc()
            raise rl.rate_limited(reject, state.scope.kind)
        return _Admitted(self, states)

    # --- local state -------------------------------------------------------------------

    def _state(self, scope: rl.Scope) -> _State:
        state = self._states.get(scope.name)
        if state is None:
            state = self._states[scope.name] = _State(scope)
        elif state.scope != scope:
            state.scope = scope  # limits changed (e.g. `strata tenants update`): the new ones apply now
        state.last_used = self._clock()
        return state

    def _kick(self, state: _State) -> None:
        if state.pump is None:
            state.pump = asyncio.create_task(self._pump(state), name=f"limiter-{state.scope.name}")

    def _settle(self, state: _State, tokens: int) -> None:
        counts, window = state.counts, rl.window_of(self._clock(), self._window_s)
        counts.add(counts.local, window, 0, tokens)
        if state.scope.limits.tpm is not None and tokens:
            counts.add(counts.pending, window, 0, tokens)
            self._kick(state)

    def _release(self, state: _State) -> None:
        state.counts.inflight = max(0, state.counts.inflight - 1)
        if state.scope.limits.max_concurrency is not None:
            self._kick(state)

    def _refund(self, state: _State) -> None:
        """Undo one admission (another scope refused the request, or its caller went away)."""
        counts, window = state.counts, rl.window_of(self._clock(), self._window_s)
        counts.add(counts.local, window, -1, 0)
        counts.add(counts.pending, window, -1, 0)
        self._release(state)
        self._kick(state)

    # --- the pump ------------------------------------------------------------------------

    async def _pump(self, state: _State) -> None:
        batch: list[asyncio.Future[rl.Reject | None]] = []
        try:
            while state.waiters or state.dirty(self._clock()):
                batch, state.waiters = state.waiters, []
                now = self._clock()
                try:
                    admitted, reject = await self._shared(state, len(batch), now)
                except _Unavailable as exc:
                    if not batch:  # only a flush failed: the heartbeat retries it
                        if state.waiters:
                            continue  # requests that came meanwhile must not wait for the heartbeat
                        break
                    FAIL_OPEN.labels(exc.args[0]).inc(len(batch))
                    self._warn(exc.args[0])
                    admitted, reject = state.counts.decide_locally(state.scope.limits, len(batch), now, self._window_s)
                for i, future in enumerate(batch):
                    if future.cancelled():
                        if i < admitted:
                            self._refund(state)
                    else:
                        future.set_result(None if i < admitted else reject)
                batch = []
        except asyncio.CancelledError:
            for future in [*batch, *state.waiters]:  # closing: let waiting requests through
                if not future.done():
                    future.set_result(None)
            raise
        finally:
            state.pump = None

    async def _shared(self, state: _State, wanted: int, now: float) -> tuple[int, rl.Reject | None]:
        """Decide `wanted` admissions (and flush this replica's deltas) on the shared document."""
        if not self._broker.connected:
            raise _Unavailable("disconnected")
        try:
            async with asyncio.timeout(self._timeout):
                kv = self._kv or await self._rebind()
                return await self._cas(kv, state, wanted, now)
        except TimeoutError:
            state.cached = None
            raise _Unavailable("timeout") from None
        except _Unavailable:
            raise
        except (NoStreamResponseError, NotFoundError) as exc:
            # The bucket is gone: a restarted NATS has lost its memory streams. Bind it
            # again (re-creating it) on the next decision instead of failing open forever.
            state.cached = None
            self._kv = None
            _log.debug("limits bucket lost: %r", exc)
            raise _Unavailable("unbound") from exc
        except Exception as exc:  # any NATS failure means "decide locally"
            state.cached = None
            _log.debug("limits bucket operation failed: %r", exc)
            raise _Unavailable("error") from exc

    async def _cas(self, kv: KeyValue, state: _State, wanted: int, now: float) -> tuple[int, rl.Reject | None]:
        name, limits, counts = state.scope.name, state.scope.limits, state.counts
        for _ in range(self._attempts):
            fresh = state.cached is None
            if state.cached is None:
                state.cached = await self._read(kv, name)
            doc, revision = state.cached
            pending = list(counts.pending)
            new, admitted, reject = rl.admit_batch(
                doc, limits, wanted=wanted, replica=self._replica, mine=counts.inflight, pending_window=pending[0],
                pending_requests=pending[1], pending_tokens=pending[2], now=now, window_s=self._window_s,
                lease_s=self._lease_s,
            )  # fmt: skip
            if reject is not None and not fresh:
                state.cached = None  # refuse only on fresh counts
                continue
            ours = new.inflight.get(self._replica, (0, 0.0))[0]
            flight_stale = limits.max_concurrency is not None and (
                doc.inflight.get(self._replica, (0, 0.0))[0] != ours or (ours > 0 and now >= counts.renew_at)
            )
            if admitted or flight_stale or (pending[0] == new.window and (pending[1] or pending[2])):
                try:
                    revision = await kv.update(name, new.encode(), last=revision)
                except KeyWrongLastSequenceError:
                    CONFLICTS.inc()
                    state.cached = None
                    continue
                counts.renew_at = now + self._lease_s / 3
            state.cached = (new, revision)
            counts.committed(pending, new.window, admitted, ours)
            return admitted, reject
        raise _Unavailable("contention")

    async def _read(self, kv: KeyValue, name: str) -> tuple[rl.ScopeDoc, int]:
        try:
            entry = await kv.get(name)
        except KeyNotFoundError:
            return rl.ScopeDoc(), 0
        return rl.ScopeDoc.decode(entry.value or b""), entry.revision or 0

    # --- background ------------------------------------------------------------------------

    async def _bind(self) -> None:
        try:
            self._kv = await self._broker.kv(
                LIMITS_BUCKET, history=1, ttl=2 * self._window_s + self._lease_s, storage=StorageType.MEMORY
            )
        except Exception as exc:  # noqa: BLE001 - fail open until the bucket can be bound
            self._warn("unbound")
            _log.debug("cannot bind %s: %r", LIMITS_BUCKET, exc)

    async def _rebind(self) -> KeyValue:
        """Bind the bucket now (at most every _REBIND_INTERVAL_S), else raise _Unavailable("unbound")."""
        now = time.monotonic()
        if now >= self._rebind_at:
            self._rebind_at = now + _REBIND_INTERVAL_S
            await self._bind()
        if self._kv is None:
            raise _Unavailable("unbound")
        return self._kv

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            if self._kv is None and self._broker.connected:
                await self._bind()
            now = self._clock()
            for name, state in list(self._states.items()):
                if state.pump is None and state.dirty(now):
                    self._kick(state)
                elif state.pump is None and not state.counts.inflight and now - state.last_used > 2 * self._window_s:
                    del self._states[name]  # idle scope: forget it

    def _warn(self, reason: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 10.0:
            self._warned_at = now
            _log.warning("rate limits fail open to this replica's counts (%s): shared state unavailable", reason)
