"""Cache-tier membership, the consistent-hash ring, and block placement."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from strata_contracts.messages.base import Contract, UInt64

__all__ = ["CacheMember", "CachePlacement", "MemberState", "RingMember", "RingState"]


class MemberState(StrEnum):
    """Lifecycle of a cache server as it reports itself."""

    JOINING = "joining"
    UP = "up"
    LEAVING = "leaving"


class CacheMember(Contract):
    """`strata.cache.v1.members`: registration and heartbeat of one cache server."""

    server_id: str = Field(description="Fleet-unique cache server id (a NATS subject token).")
    host: str = Field(description="Host the binary protocol listens on.")
    port: int = Field(gt=0, lt=65536, description="TCP port of the binary protocol.")
    shm_path: str | None = Field(default=None, description="Shared-memory path for same-host clients.")
    capacity_bytes: int = Field(ge=0, description="DRAM budget for block payloads.")
    used_bytes: int = Field(ge=0, description="Bytes currently held.")
    state: MemberState = Field(description="Lifecycle state.")
    ts: float = Field(description="Unix time (s) of this heartbeat.")


class RingMember(Contract):
    """One server's place on the ring."""

    server_id: str = Field(description="Cache server id.")
    address: str = Field(description="`host:port` clients connect to.")
    weight: int = Field(default=1, gt=0, description="Relative share of virtual nodes.")


class RingState(Contract):
    """Value of the ring bucket: the whole consistent-hash ring at one epoch."""

    epoch: int = Field(ge=0, description="Increases by one on every membership change.")
    members: list[RingMember] = Field(description="Members, sorted by server id.")
    vnodes: int = Field(gt=0, description="Virtual nodes per unit of weight.")
    replicas: int = Field(gt=0, description="Copies of each block kept on distinct servers.")
    checksum: str = Field(description="Hex digest over epoch and members; clients verify it.")


class CachePlacement(Contract):
    """`strata.cache.v1.placement.<server>`: keys stored and evicted since the last batch."""

    server_id: str = Field(description="Cache server id.")
    seq: int = Field(ge=0, description="Per-server batch counter; a gap means lost batches.")
    epoch: int = Field(ge=0, description="Ring epoch the server was working at.")
    stored: list[UInt64] = Field(default_factory=list, description="Block keys now held.")
    evicted: list[UInt64] = Field(default_factory=list, description="Block keys dropped.")
