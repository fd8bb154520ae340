"""Rate-limit arithmetic shared by every gateway replica: windows, scopes, the shared counter
document and the admit decision. Pure: the NATS adapter (adapters/limits_nats.py) stores
and compare-and-sets the documents; this module decides.

Semantics (AIBrix-compatible fixed windows, see reference/routing.md §10):

* RPM and TPM count in fixed windows of `window_s` (60 s) aligned to the Unix epoch, so
  every replica agrees on the window from its own clock: `window = floor(now / window_s)`.
* A request is refused when, before it, `requests >= rpm` or `tokens >= tpm` in the current
  window, or `in flight >= max_concurrency`. An admitted request counts 1 request at once;
  its tokens (prompt + completion) are added when the response is done (post-paid, so one
  request can overshoot TPM). A refused request counts nothing.
* `retry-after` is the whole seconds until the window resets (at least 1); for concurrency,
  which has no window, it is 1.

Scopes: a request is checked against its key's limits and against its tenant's limits
(which cap all the tenant's keys together). One JSON document per scope holds::

    {"w": window, "r": requests in w, "t": tokens in w, "f": {replica: [in flight, lease expiry]}}

In-flight counts are per replica with a lease, so the slots of a replica that died are
freed when its lease expires instead of leaking forever.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Literal

import orjson

from strata_gateway.domain.ports import GatewayError, Limits, Principal

__all__ = [
    "LimitKind",
    "Reject",
    "ReplicaCounts",
    "Scope",
    "ScopeDoc",
    "ScopedPrincipal",
    "admit_batch",
    "check",
    "rate_limited",
    "retry_after_s",
    "scopes_of",
    "window_of",
]

LimitKind = Literal["requests", "tokens", "concurrency"]
_SAFE = re.compile(r"^[A-Za-z0-9_=\-]{1,64}$")


@dataclass(frozen=True)
class ScopedPrincipal(Principal):
    """A Principal that also carries its tenant's own limits (PgAuthenticator returns these).

    `limits` (inherited) are the key's effective limits; `tenant_limits` cap every key of
    the tenant together.
    """

    tenant_limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class Scope:
    """One budget a request draws on: a key's or a tenant's."""

    name: str  # the document key: `key.<id>` or `tenant.<id>`
    kind: Literal["key", "tenant"]
    limits: Limits


def _limited(limits: Limits) -> bool:
    return limits.rpm is not None or limits.tpm is not None or limits.max_concurrency is not None


def _token(value: str) -> str:
    """`value` if it is a safe KV key token, else a stable digest of it."""
    if _SAFE.fullmatch(value):
        return value
    return "h" + hashlib.sha256(value.encode()).hexdigest()[:32]


def scopes_of(principal: Principal) -> list[Scope]:
    """The scopes `principal` must be admitted in (unlimited scopes are left out).

    * with a key: the key scope with `principal.limits`, plus the tenant scope with
      `tenant_limits` when the principal is a :class:`ScopedPrincipal`;
    * without a key: the tenant scope with `principal.limits`.
    """
    scopes: list[Scope] = []
    tenant_limits = principal.limits
    if principal.key_id is not None:
        scopes.append(Scope(f"key.{_token(principal.key_id)}", "key", principal.limits))
        tenant_limits = principal.tenant_limits if isinstance(principal, ScopedPrincipal) else Limits()
    scopes.append(Scope(f"tenant.{_token(principal.tenant_id)}", "tenant", tenant_limits))
    return [scope for scope in scopes if _limited(scope.limits)]


def window_of(now: float, window_s: float) -> int:
    """Index of the fixed window containing Unix time `now`."""
    return math.floor(now / window_s)


def retry_after_s(now: float, window: int, window_s: float) -> int:
    """Whole seconds from `now` until window `window` ends (at least 1)."""
    return max(1, math.ceil((window + 1) * window_s - now))


@dataclass(frozen=True)
class Reject:
    """Why a request is refused."""

    kind: LimitKind
    limit: int
    retry_after_s: int


def check(limits: Limits, *, requests: int, tokens: int, inflight: int, retry_after: int) -> Reject | None:
    """The first limit one more request would break, or None (RPM, then TPM, then concurrency)."""
    if limits.rpm is not None and requests >= limits.rpm:
        return Reject("requests", limits.rpm, retry_after)
    if limits.tpm is not None and tokens >= limits.tpm:
        return Reject("tokens", limits.tpm, retry_after)
    if limits.max_concurrency is not None and inflight >= limits.max_concurrency:
        return Reject("concurrency", limits.max_concurrency, 1)
    return None


@dataclass
class ScopeDoc:
    """The shared counters of one scope (the JSON document in the limits bucket)."""

    window: int = -1
    requests: int = 0
    tokens: int = 0
    inflight: dict[str, tuple[int, float]] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Compact JSON."""
        flights = {replica: [count, round(expiry, 3)] for replica, (count, expiry) in self.inflight.items()}
        return orjson.dumps({"w": self.window, "r": self.requests, "t": self.tokens, "f": flights})

    @classmethod
    def decode(cls, data: bytes) -> ScopeDoc:
        """Parse a document; an unreadable one counts as empty (it is overwritten by the next write)."""
        try:
            raw = orjson.loads(data)
            flights = {str(r): (int(v[0]), float(v[1])) for r, v in raw.get("f", {}).items()}
            return cls(int(raw["w"]), int(raw["r"]), int(raw["t"]), flights)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AttributeError):
            return cls()


def admit_batch(
    doc: ScopeDoc,
    limits: Limits,
    *,
    wanted: int,
    replica: str,
    mine: int,
    pending_window: int,
    pending_requests: int,
    pending_tokens: int,
    now: float,
    window_s: float,
    lease_s: float,
) -> tuple[ScopeDoc, int, Reject | None]:
    """Fold this replica's state into `doc` and admit up to `wanted` requests, in order.

    Args:
        doc: the current shared document (not modified).
        limits: the scope's limits.
        wanted: requests waiting for a decision.
        replica: this replica's id.
        mine: this replica's requests in flight in the scope now (before these).
        pending_window: window the pending deltas belong to (dropped if it is over).
        pending_requests: requests counted locally but not yet in the document (may be < 0: refunds).
        pending_tokens: tokens settled locally but not yet in the document.
        now: Unix time.
        window_s: window length.
        lease_s: how long this replica's in-flight entry stays valid without a renewal.

    Returns:
        (the new document, how many were admitted, the rejection of the rest or None).
    """
    window = max(window_of(now, window_s), doc.window)
    new = ScopeDoc(window, inflight=dict(doc.inflight))
    if window == doc.window:
        new.requests, new.tokens = doc.requests, doc.tokens
    if pending_window == window:
        new.requests = max(0, new.requests + pending_requests)
        new.tokens = max(0, new.tokens + pending_tokens)
    others = 0
    for other, (count, expiry) in list(new.inflight.items()):
        if other == replica:
            continue
        if expiry < now:
            del new.inflight[other]
        else:
            others += count
    admitted = 0
    reject: Reject | None = None
    retry = retry_after_s(now, window, window_s)
    while admitted < wanted:
        reject = check(limits, requests=new.requests, tokens=new.tokens, inflight=others + mine + admitted,
                       retry_after=retry)  # fmt: skip
        if reject is not None:
            break
        new.requests += 1
        admitted += 1
    if limits.max_concurrency is not None and mine + admitted > 0:
        new.inflight[replica] = (mine + admitted, now + lease_s)
    else:
        new.inflight.pop(replica, None)
    return new, admitted, reject


def rate_limited(reject: Reject, scope: Literal["key", "tenant"]) -> GatewayError:
    """The 429 for `reject`, with OpenAI's envelope fields and `retry-after`."""
    what = {"requests": "requests per minute", "tokens": "tokens per minute", "concurrency": "concurrent requests"}
    message = (
        f"Rate limit reached for {what[reject.kind]} on this {'API key' if scope == 'key' else 'tenant'}: "
        f"limit {reject.limit}. Please try again in {reject.retry_after_s}s."
    )
    headers = {"retry-after": str(reject.retry_after_s), f"x-ratelimit-limit-{reject.kind}": str(reject.limit)}
    if reject.kind != "concurrency":
        headers[f"x-ratelimit-reset-{reject.kind}"] = f"{reject.retry_after_s}s"
        headers[f"x-ratelimit-remaining-{reject.kind}"] = "0"
    return GatewayError(429, message, "rate_limit_error", code="rate_limit_exceeded", headers=headers)


@dataclass
class ReplicaCounts:
    """One replica's own counts in one scope, and what of them the shared document still lacks.

    Attributes:
        inflight: this replica's requests in flight in the scope.
        local: [window, requests, tokens] this replica admitted/settled (the fail-open basis).
        pending: [window, requests, tokens] not yet written to the shared document (requests
            may be negative: refunds).
        published: the in-flight count last written for this replica.
        renew_at: when this replica's in-flight lease in the document wants renewing.
    """

    inflight: int = 0
    local: list[int] = field(default_factory=lambda: [-1, 0, 0])
    pending: list[int] = field(default_factory=lambda: [-1, 0, 0])
    published: int = 0
    renew_at: float = 0.0

    @staticmethod
    def add(bucket: list[int], window: int, requests: int, tokens: int) -> None:
        """Add to a [window, requests, tokens] bucket, restarting it when the window moved on."""
        if bucket[0] != window:
            bucket[:] = [window, 0, 0]
        bucket[1] += requests
        bucket[2] += tokens

    def dirty(self, limits: Limits, now: float) -> bool:
        """Whether the shared document lacks something this replica knows."""
        tracks = limits.max_concurrency is not None
        stale_flight = tracks and (self.inflight != self.published or (self.inflight > 0 and now >= self.renew_at))
        return stale_flight or self.pending[1] != 0 or self.pending[2] != 0

    def decide_locally(self, limits: Limits, wanted: int, now: float, window_s: float) -> tuple[int, Reject | None]:
        """Fail-open decision from this replica's own counts (a lower bound of the fleet's)."""
        window = window_of(now, window_s)
        self.add(self.local, window, 0, 0)
        retry = retry_after_s(now, window, window_s)
        for admitted in range(wanted):
            reject = check(limits, requests=self.local[1], tokens=self.local[2], inflight=self.inflight,
                           retry_after=retry)  # fmt: skip
            if reject is not None:
                return admitted, reject
            self.add(self.local, window, 1, 0)
            self.add(self.pending, window, 1, 0)
            self.inflight += 1
        return wanted, None

    def committed(self, written: list[int], window: int, admitted: int, published: int) -> None:
        """A shared write (or a no-op decision) based on the pending snapshot `written` succeeded."""
        if self.pending[0] == written[0]:
            self.pending[1] -= written[1]
            self.pending[2] -= written[2]
        self.add(self.local, window, admitted, 0)
        self.inflight += admitted
        self.published = published
