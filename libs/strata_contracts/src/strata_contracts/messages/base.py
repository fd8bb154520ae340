"""Base class of every message and the JSON codec used on the wire."""

from __future__ import annotations

from typing import Annotated, NewType, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BlockKey",
    "Contract",
    "EngineId",
    "RequestId",
    "TenantId",
    "UInt64",
    "decode",
    "encode",
]

EngineId = NewType("EngineId", str)
TenantId = NewType("TenantId", str)
RequestId = NewType("RequestId", str)
BlockKey = NewType("BlockKey", int)

UInt64 = Annotated[int, Field(ge=0, lt=2**64)]
"""An unsigned 64-bit integer (block hashes and keys travel as such)."""


class Contract(BaseModel):
    """A message on the event plane: immutable, strict about unknown fields.

    Subclasses describe every field; the descriptions are the message documentation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


M = TypeVar("M", bound=Contract)


def encode(message: Contract) -> bytes:
    """Serialize `message` to compact JSON bytes (fields left at None are dropped)."""
    return orjson.dumps(message.model_dump(mode="json", exclude_none=True))


def decode(cls: type[M], data: bytes | str) -> M:
    """Parse and validate JSON `data` as `cls`; raises pydantic.ValidationError."""
    return cls.model_validate_json(data)
