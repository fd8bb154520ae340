"""Publish and receive one example of every contract over a live NATS.

Each channel is exercised over its real transport (core pub/sub, request/reply, a
JetStream stream, a key-value bucket) and the received message must equal the sent one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from nats.aio.msg import Msg

from strata_contracts.catalog import CHANNELS, Channel, Transport, address
from strata_contracts.examples import examples
from strata_contracts.messages import Contract, decode, encode
from strata_runtime.messaging import Broker
from strata_runtime.plane import ensure_event_plane

__all__ = ["RoundTrip", "round_trip_all"]

_TIMEOUT = 5.0


@dataclass(frozen=True)
class RoundTrip:
    """Result of one channel's round trip."""

    channel: Channel
    address: str
    size: int
    ok: bool
    millis: float


async def round_trip_all(nats_url: str) -> list[RoundTrip]:
    """Exercise every channel in the catalog; never raises for a failed channel."""
    broker = await Broker.connect(nats_url, "strata-demo")
    try:
        await ensure_event_plane(broker)
        samples = {type(message): message for message in examples()}
        results = []
        for channel in CHANNELS:
            message = samples[channel.message]
            reply = samples[channel.reply] if channel.reply else None
            started = time.perf_counter()
            try:
                ok = await asyncio.wait_for(_one(broker, channel, message, reply), _TIMEOUT)
            except TimeoutError:
                ok = False
            millis = (time.perf_counter() - started) * 1000
            results.append(RoundTrip(channel, address(message), len(encode(message)), ok, millis))
        return results
    finally:
        await broker.close()


async def _one(broker: Broker, channel: Channel, message: Contract, reply: Contract | None) -> bool:
    where = address(message)
    kind = type(message)
    if channel.transport is Transport.PUBSUB:
        got: asyncio.Future[Contract] = asyncio.get_running_loop().create_future()

        async def receive(received: Contract, _: Msg) -> None:
            if not got.done():
                got.set_result(received)

        sub = await broker.subscribe(where, kind, receive)
        await broker.publish(where, message)
        try:
            return await got == message
        finally:
            await sub.unsubscribe()
    if channel.transport is Transport.REQUEST:
        assert reply is not None
        assert channel.reply is not None

        async def respond(received: Contract, _: Msg) -> Contract | None:
            return reply if received == message else None

        sub = await broker.subscribe(where, kind, respond)
        try:
            return await broker.request(where, message, channel.reply, _TIMEOUT) == reply
        finally:
            await sub.unsubscribe()
    assert channel.container is not None
    if channel.transport is Transport.STREAM:
        ack = await broker.publish_js(where, message, msg_id=f"demo-{time.time_ns()}")
        stored = await broker.js.get_msg(channel.container, ack.seq)
        return stored.data is not None and decode(kind, stored.data) == message
    bucket = await broker.kv(channel.container)
    await bucket.put(where, encode(message))
    entry = await bucket.get(where)
    return entry.value is not None and decode(kind, entry.value) == message
