"""ZMQ sockets of one engine's KV-event publisher: the SUB stream and the replay DEALER.

Frames (vLLM `ZmqEventPublisher`):

    PUB     -> SUB     [topic, seq (8 B big-endian), payload]
    DEALER  -> ROUTER  [b"", start seq]
    ROUTER  -> DEALER  [b"", topic, seq, payload] for each buffered seq >= start,
                       then [b"", b"", SEQ_END, b""]              (vLLM 0.32, main)
                       or [b"", seq, payload] ... [b"", SEQ_END, b""]   (older vLLM, SGLang)

The subscriber also watches its socket monitor, so a dropped connection (the engine
restarted, or the network did) is reported to the caller as :data:`DISCONNECTED`.
Each replay uses a fresh DEALER, so a late answer to a timed-out request can never be
read as the answer to the next one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal, Protocol

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from strata_contracts.vllm_kv_events import SEQ_END, decode_seq, encode_seq

__all__ = [
    "DISCONNECTED",
    "Disconnected",
    "KvReplaySource",
    "KvSource",
    "MalformedMessage",
    "RawBatch",
    "ZmqKvSubscriber",
    "ZmqReplayClient",
]

_log = logging.getLogger(__name__)
_SUB_HWM: Final = 100_000  # as vLLM's PUB side: a burst must not be dropped on our side


@dataclass(frozen=True)
class RawBatch:
    """One received batch, payload still encoded."""

    seq: int
    payload: bytes
    topic: bytes = b""


class Disconnected(Enum):
    """Marker returned by :meth:`ZmqKvSubscriber.receive` when the connection dropped."""

    DISCONNECTED = "disconnected"


DISCONNECTED: Final = Disconnected.DISCONNECTED


class MalformedMessage(ValueError):
    """A ZMQ message that does not have vLLM's framing."""


class KvSource(Protocol):
    """A stream of raw KV-event batches."""

    async def receive(self) -> RawBatch | Literal[Disconnected.DISCONNECTED]:
        """The next batch, or DISCONNECTED. Raises MalformedMessage on bad framing."""
        ...


class KvReplaySource(Protocol):
    """Access to the batches an engine still buffers."""

    async def replay(self, start: int, stop: int) -> list[RawBatch]:
        """Buffered batches with start <= seq < stop, ascending; what arrived before the deadline."""
        ...


class ZmqKvSubscriber:
    """SUB socket on an engine's KV-event endpoint.

    Args:
        context: the app's asyncio ZMQ context.
        endpoint: e.g. `tcp://10.0.0.5:5557`.
        topic: topic prefix to subscribe to ('' = all).
        bind: bind instead of connect (the engine's PUB connects when its endpoint has no wildcard).
    """

    def __init__(self, context: zmq.asyncio.Context, endpoint: str, *, topic: str = "", bind: bool = False) -> None:
        self._socket = context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, _SUB_HWM)
        self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._monitor = self._socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        if bind:
            self._socket.bind(endpoint)
        else:
            self._socket.connect(endpoint)
        self._poller = zmq.asyncio.Poller()
        self._poller.register(self._monitor, zmq.POLLIN)
        self._poller.register(self._socket, zmq.POLLIN)

    async def receive(self) -> RawBatch | Literal[Disconnected.DISCONNECTED]:
        """Wait for the next batch or a disconnect (reported first when both are pending).

        Raises:
            MalformedMessage: the message does not have 3 frames with an 8-byte seq.
        """
        while True:
            ready = dict(await self._poller.poll())
            if self._monitor in ready:
                event = parse_monitor_message(await self._monitor.recv_multipart())
                if event["event"] == zmq.EVENT_DISCONNECTED:
                    return DISCONNECTED
            if self._socket in ready:
                frames = await self._socket.recv_multipart()
                if len(frames) != 3:
                    raise MalformedMessage(f"expected 3 frames [topic, seq, payload], got {len(frames)}")
                try:
                    seq = decode_seq(frames[1])
                except ValueError as exc:
                    raise MalformedMessage(str(exc)) from None
                return RawBatch(seq=seq, payload=frames[2], topic=frames[0])

    def close(self) -> None:
        """Close the socket and its monitor (idempotent)."""
        if not self._socket.closed:
            self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close(linger=0)


class ZmqReplayClient:
    """Replay requests to an engine's ROUTER socket.

    Args:
        context: the app's asyncio ZMQ context.
        endpoint: e.g. `tcp://10.0.0.5:5558`.
        timeout: deadline of one replay, in seconds.
    """

    def __init__(self, context: zmq.asyncio.Context, endpoint: str, timeout: float) -> None:
        self._context = context
        self._endpoint = endpoint
        self._timeout = timeout

    async def replay(self, start: int, stop: int) -> list[RawBatch]:
        """Batches with start <= seq < stop, ascending, as far as the engine still has them.

        Reading stops at the end marker, at the first seq >= stop - 1, or at the deadline
        (what arrived by then is returned; an unreachable engine gives []).
        """
        socket = self._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        batches: list[RawBatch] = []
        try:
            socket.connect(self._endpoint)
            await socket.send_multipart([b"", encode_seq(start)])
            async with asyncio.timeout(self._timeout):
                while True:
                    reply = _replay_reply(await socket.recv_multipart())
                    if reply is None:
                        break
                    if start <= reply.seq < stop:
                        batches.append(reply)
                    if reply.seq >= stop - 1:
                        break
        except TimeoutError:
            _log.warning("kv replay from %s timed out", self._endpoint, extra={"start": start, "got": len(batches)})
        except (zmq.ZMQError, ValueError) as exc:
            _log.warning("kv replay from %s failed: %r", self._endpoint, exc)
        finally:
            socket.close(linger=0)
        return batches


def _replay_reply(frames: list[bytes]) -> RawBatch | None:
    """One replay reply (either framing, delimiter first); None for the end marker.

    Raises:
        ValueError: neither framing.
    """
    match frames:
        case [b"", seq, payload]:
            topic = b""
        case [b"", topic, seq, payload]:
            pass
        case [b"", _]:  # the oldest publishers end with a bare empty frame
            return None
        case _:
            raise ValueError(f"unexpected replay reply of {len(frames)} frames")
    number = decode_seq(seq)
    return None if number == SEQ_END else RawBatch(seq=number, payload=payload, topic=topic)
