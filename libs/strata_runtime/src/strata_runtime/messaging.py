"""NATS connection factory: reconnecting client, JetStream, typed publish/subscribe.

A :class:`Broker` wraps one nats-py connection for one process. It encodes and decodes
Strata contracts, carries W3C trace context in message headers in both directions,
opens a consumer span per handled message, counts messages in Prometheus, and never
lets a bad message kill a subscription (it is logged and counted as `invalid`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import nats
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, PubAck, StreamConfig
from nats.js.errors import APIError, BucketNotFoundError, NoStreamResponseError, NotFoundError
from nats.js.kv import KeyValue
from opentelemetry.trace import SpanKind
from prometheus_client import Counter
from pydantic import ValidationError

from strata_contracts.messages import Contract, decode, encode
from strata_runtime.tracing import extract_context, inject_headers, tracer

__all__ = ["Broker", "Handler", "JetStreamPipeline", "pub_frame", "write_frames"]

M = TypeVar("M", bound=Contract)
R = TypeVar("R", bound=Contract)
Handler = Callable[[M, Msg], Awaitable[Contract | None]]

_log = logging.getLogger(__name__)
_tracer = tracer(__name__)
_LINE_BREAKS: Final = str.maketrans({"\r": " ", "\n": " "})
_WHITESPACE: Final = re.compile(r"\s")
MESSAGES = Counter(
    "strata_nats_messages_total",
    "NATS messages handled by subscriptions, by subscription subject and outcome.",
    ["subject", "outcome"],
)


class Broker:
    """One process's NATS connection. Build it with :meth:`connect`.

    Args:
        client: a connected nats-py client (owned by the broker from now on).
        url: the server URL, for logs.
    """

    def __init__(self, client: NatsClient, url: str = "") -> None:
        self.client = client
        self.url = url
        self.js: JetStreamContext = client.jetstream()
        self._closing = False

    @classmethod
    async def connect(cls, url: str, name: str, *, connect_timeout: float = 5.0) -> Broker:
        """Connect to `url` as client `name`, reconnecting forever after the first success.

        Raises:
            ConnectionError: the first connection failed (unreachable server, bad URL).
        """
        events: list[Broker] = []  # the broker, once built: callbacks need it to tell a close from a loss

        async def on_disconnect() -> None:
            if not (events and events[0]._closing):
                _log.warning("nats disconnected", extra={"nats_url": url})

        async def on_reconnect() -> None:
            _log.info("nats reconnected", extra={"nats_url": url})

        async def on_error(exc: Exception) -> None:
            _log.warning("nats error: %s", exc, extra={"nats_url": url})

        # nats-py retries a failed first connect forever when reconnects are allowed, so
        # the first connection gets its own deadline; after it, reconnects are unbounded.
        try:
            async with asyncio.timeout(connect_timeout):
                client = await nats.connect(
                    url,
                    name=name,
                    connect_timeout=connect_timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                    error_cb=on_error,
                )
        except Exception as exc:
            raise ConnectionError(f"cannot connect to NATS at {url}: {exc!r}") from exc
        events.append(cls(client, url))
        return events[0]

    @property
    def connected(self) -> bool:
        """Whether the connection is currently up (for readiness checks)."""
        return bool(self.client.is_connected)

    async def publish(self, subject: str, message: Contract, headers: dict[str, str] | None = None) -> None:
        """Publish `message` on core NATS with the current trace context in its headers."""
        await self.client.publish(subject, encode(message), headers=inject_headers(headers))

    async def publish_js(self, subject: str, message: Contract, *, msg_id: str | None = None) -> PubAck:
        """Publish `message` to a JetStream stream; `msg_id` makes the publish idempotent."""
        headers = inject_headers()
        if msg_id is not None:
            headers["Nats-Msg-Id"] = msg_id
        return await self.js.publish(subject, encode(message), headers=headers)

    async def request(self, subject: str, message: Contract, reply_type: type[R], timeout: float) -> R:
        """Send a request and decode the reply as `reply_type`.

        Raises:
            nats.errors.TimeoutError: no reply within `timeout` seconds.
            nats.errors.NoRespondersError: nobody serves `subject`.
            pydantic.ValidationError: the reply is not a valid `reply_type`.
        """
        reply = await self.client.request(subject, encode(message), timeout=timeout, headers=inject_headers())
        return decode(reply_type, reply.data)

    async def subscribe(
        self, subject: str, message_type: type[M], handler: Handler[M], *, queue: str = ""
    ) -> Subscription:
        """Call `handler(message, msg)` for each valid message on `subject`.

        A handler's non-None return value is sent as the reply when the message has a
        reply subject. Invalid payloads and handler exceptions are logged and counted;
        the subscription keeps running.
        """

        async def on_message(msg: Msg) -> None:
            parent = extract_context(msg.headers)
            with _tracer.start_as_current_span(f"{subject} process", context=parent, kind=SpanKind.CONSUMER) as span:
                span.set_attribute("messaging.destination.name", msg.subject)
                try:
                    message = decode(message_type, msg.data)
                except ValidationError as exc:
                    MESSAGES.labels(subject, "invalid").inc()
                    _log.warning("invalid %s on %s: %s", message_type.__name__, msg.subject, _first_error(exc))
                    return
                try:
                    reply = await handler(message, msg)
                except Exception:  # noqa: BLE001 - logged and counted; the subscription must survive
                    MESSAGES.labels(subject, "error").inc()
                    _log.exception("handler failed for %s", msg.subject)
                    return
                if reply is not None and msg.reply:
                    await self.client.publish(msg.reply, encode(reply), headers=inject_headers())
                MESSAGES.labels(subject, "ok").inc()

        return await self.client.subscribe(subject, queue=queue, cb=on_message)

    async def ensure_stream(self, name: str, subjects: list[str], **config: Any) -> None:
        """Create JetStream stream `name` over `subjects`, or update it to this config."""
        stream = StreamConfig(name=name, subjects=subjects, **config)
        try:
            await self.js.stream_info(name)
        except NotFoundError:
            await self.js.add_stream(stream)
        else:
            await self.js.update_stream(stream)

    async def kv(self, bucket: str, **config: Any) -> KeyValue:
        """Bind JetStream key-value bucket `bucket`, creating it with `config` if missing."""
        try:
            return await self.js.key_value(bucket)
        except BucketNotFoundError:
            return await self.js.create_key_value(KeyValueConfig(bucket=bucket, **config))

    async def close(self) -> None:
        """Drain subscriptions (pending messages are handled) and close the connection."""
        if self.client.is_closed:
            return
        self._closing = True
        try:
            await self.client.drain()
        except Exception as exc:  # noqa: BLE001 - closing anyway
            _log.warning("nats drain failed: %r", exc)
            await self.client.close()


def pub_frame(subject: str, payload: bytes, *, reply: str = "", headers: Mapping[str, str] | None = None) -> bytes:
    """One NATS protocol frame that publishes `payload`: PUB, or HPUB when there are headers.

    Header names must be tokens (the callers build them); CR and LF in header values
    become spaces, as nats-py's publish does.

    Raises:
        ValueError: `subject` or `reply` is empty or holds whitespace (the frame would break
            the connection's protocol stream, not just this message).
    """
    if not subject or _WHITESPACE.search(subject) or (reply and _WHITESPACE.search(reply)):
        raise ValueError(f"not a NATS subject: {subject!r} (reply {reply!r})")
    target = f"{subject} {reply}" if reply else subject
    if not headers:
        return b"%s%s\r\n" % (f"PUB {target} {len(payload)}\r\n".encode(), payload)
    head = "".join(f"{name}: {value.translate(_LINE_BREAKS)}\r\n" for name, value in headers.items())
    encoded = f"NATS/1.0\r\n{head}\r\n".encode()
    size = len(encoded)
    return b"%s%s%s\r\n" % (f"HPUB {target} {size} {size + len(payload)}\r\n".encode(), encoded, payload)


async def write_frames(client: NatsClient, frames: Sequence[bytes]) -> None:
    """Hand pre-encoded publish frames (:func:`pub_frame`) to `client` in one write.

    nats-py has no batch publish: each `publish` validates, encodes headers and hands a
    flush to its flusher task. This appends the frames to the client's outgoing buffer
    (kept across a reconnect like any publish) and wakes the flusher once. It uses the
    client's internal buffer API (nats-py is pinned; `test_messaging` covers it).

    Raises:
        nats.errors.ConnectionClosedError: the client is closed.
    """
    if client.is_closed:
        raise ConnectionClosedError
    await client._send_command(b"".join(frames))  # private: see above
    await client._flush_pending()


class JetStreamPipeline:
    """JetStream publishes with many acks outstanding at once on one connection.

    nats-py's `js.publish` is a request/reply per message (a fresh inbox token from the
    OS's random source, a `wait_for` timer, the ack parsed twice). Here every publish goes
    out with reply subject `<inbox>.<n>`, one wildcard subscription resolves the waiting
    future of each ack, and one sweeper fails those older than their timeout:

        publish(subject, payload, headers) ──PUB subject <inbox>.n──▶ JetStream
              ▲ future n                                         │
              └──────────── ack {"stream","seq","duplicate"} ◀───┘  (or error / 503 no stream)

    Args:
        client: the connected nats-py client (owned by the caller).
        timeout_s: default time to wait for an ack.
    """

    def __init__(self, client: NatsClient, timeout_s: float) -> None:
        self._client = client
        self._timeout = timeout_s
        self._prefix = ""
        self._seq = 0
        self._waiting: dict[str, tuple[asyncio.Future[PubAck], float]] = {}
        self._subscription: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe to this pipeline's ack inbox and start the timeout sweeper."""
        self._prefix = self._client.new_inbox()
        self._subscription = await self._client.subscribe(f"{self._prefix}.*", cb=self._on_ack)
        self._sweeper = asyncio.create_task(self._sweep(), name="jetstream-ack-sweeper")

    async def close(self) -> None:
        """Stop; publishes still waiting fail with ConnectionError."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("the JetStream pipeline closed"))
        self._waiting.clear()

    async def send(
        self, subject: str, payload: bytes, headers: Mapping[str, str], timeout_s: float | None = None
    ) -> asyncio.Future[PubAck]:
        """Publish to a stream; returns the future of its ack (put `Nats-Msg-Id` in `headers` for dedup).

        The future fails with TimeoutError (no ack in time), NoStreamResponseError (no
        stream captures `subject`) or APIError (JetStream refused the message).

        Raises:
            ValueError: `subject` is not a valid subject.
            nats errors: the message could not be handed to the connection.
        """
        (future,) = await self.send_many([(subject, payload, headers)], timeout_s)
        return future

    async def send_many(
        self, messages: Sequence[tuple[str, bytes, Mapping[str, str]]], timeout_s: float | None = None
    ) -> list[asyncio.Future[PubAck]]:
        """:meth:`send` for each of `messages` (subject, payload, headers), handed to the connection in one write.

        Raises:
            ValueError: a subject is not a valid subject (nothing was sent).
            nats errors: the frames could not be handed to the connection (no future is left waiting).
        """
        tokens = [self._next_token() for _ in messages]
        frames = [
            pub_frame(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)
            for token, (subject, payload, headers) in zip(tokens, messages, strict=True)
        ]
        futures = [self._expect(token, timeout_s) for token in tokens]
        try:
            await write_frames(self._client, frames)
        except BaseException:
            for token in tokens:
                self._waiting.pop(token, None)
            raise
        return futures

    def _next_token(self) -> str:
        self._seq += 1
        return str(self._seq)

    def _expect(self, token: str, timeout_s: float | None) -> asyncio.Future[PubAck]:
        """The future of the ack on `<inbox>.<token>`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PubAck] = loop.create_future()
        future.add_done_callback(_retrieve)  # a caller that stopped waiting leaves no "never retrieved" noise
        self._waiting[token] = (future, loop.time() + (self._timeout if timeout_s is None else timeout_s))
        return future

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str], timeout_s: float | None = None
    ) -> PubAck:
        """:meth:`send`, then wait for the ack (its errors are raised here)."""
        return await (await self.send(subject, payload, headers, timeout_s))

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject[len(self._prefix) + 1 :], None)
        if entry is None or entry[0].done():
            return  # timed out already
        future = entry[0]
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(NoStreamResponseError())
            return
        try:
            reply = orjson.loads(msg.data)
            if "error" in reply:
                error = reply["error"]
                code, description = error.get("code"), error.get("description")
                future.set_exception(APIError(code=code, description=description, err_code=error.get("err_code")))
            else:
                future.set_result(PubAck(stream=reply["stream"], seq=reply["seq"], duplicate=reply.get("duplicate")))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            future.set_exception(APIError(description=f"unreadable JetStream ack: {exc!r}"))

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(0.1, self._timeout / 4))
            now = loop.time()
            expired = [token for token, (_, deadline) in self._waiting.items() if deadline <= now]
            for token in expired:
                future, _ = self._waiting.pop(token)
                if not future.done():
                    future.set_exception(TimeoutError("no JetStream ack in time"))


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
