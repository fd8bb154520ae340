"""A loopback mock OpenAI server with known timing, and the client's self-check against it.

The mock (:class:`MockServer`, aiohttp, port 0) answers ``/v1/models``,
``/v1/completions`` and ``/v1/chat/completions``, streaming (SSE, honours
``stream_options.include_usage`` and ``continuous_usage_stats``) or not. Output is always
exactly ``max_tokens`` tokens (``r<request>t<k> `` each, so replies are distinct). Token
``k`` (0-based) is written at ``start + first_token_delay + k * per_token_delay``
(absolute targets, a chunk of several tokens at its last token's time), where ``start`` is
when the request arrived or, with ``serialize``, when it got the single "engine" slot.
Prompt tokens are whitespace words; ``cached_tokens`` counts leading 16-word blocks seen
before. Every request body, header set, reply and server-side time (arrival, each chunk
write; CLOCK_MONOTONIC) is kept in :attr:`MockServer.log`; requests sent with an
``x-request-id`` header have their times served at ``GET /mock/timings``.

:func:`selfcheck` runs the client against the mock (default: in a subprocess pinned to
its own core), compares measured TTFT and ITL with the configured truth, and splits each
request's TTFT error into client send → mock, mock lateness, and mock write → client.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from strata_bench.analysis import metrics as m
from strata_bench.analysis.report import fmt
from strata_bench.analysis.stats import Distribution, describe
from strata_bench.client import EndpointConfig, LoadConfig, LoadRunner, synthetic_plan
from strata_bench.client.sse import parse_cost_us

__all__ = ["Exchange", "MockConfig", "MockServer", "SelfcheckResult", "mock_subprocess", "selfcheck", "serve_forever"]

_RID = "x-request-id"  # requests carrying it get their server-side times at GET /mock/timings


@dataclass(frozen=True)
class MockConfig:
    """Knobs of the mock engine (delays in seconds)."""

    first_token_delay_s: float = 0.020
    per_token_delay_s: float = 0.005
    tokens_per_chunk: int = 1
    serialize: bool = False  # one request at a time: a server with capacity 1
    engine: str = "mock-0"
    engine_header: str = "x-strata-engine"
    fail_every: int = 0  # every n-th request answers 503 (0: never)
    prefix_block_words: int = 16
    spin_s: float = 0.001
    model: str = "mock-model"


@dataclass
class Exchange:
    """One request the mock received, the text it answered and when (``perf_counter``:
    CLOCK_MONOTONIC, comparable across processes of one host): handler start and the
    moment each token chunk was handed to the socket."""

    body: dict[str, Any]
    headers: dict[str, str]
    arrived: float
    reply: str = ""
    writes: list[float] = field(default_factory=list)


@dataclass
class MockServer:
    """In-process mock server; ``async with MockServer(cfg) as url`` starts it on a free port."""

    config: MockConfig = field(default_factory=MockConfig)
    log: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._slot = asyncio.Lock()
        self._blocks: set[int] = set()

    def app(self) -> web.Application:
        """The aiohttp application (routes only; no state beyond this object)."""
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/mock/timings", self._timings)
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/chat/completions", self._generate)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host`:`port` (0: a free port); return the base URL."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        return f"http://{bound[0]}:{bound[1]}"

    async def close(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.config.model, "object": "model"}]})

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _timings(self, _: web.Request) -> web.Response:
        """``{x-request-id: {"arrived": s, "writes": [s, ...]}}`` of requests that sent the header."""
        out = {rid: {"arrived": ex.arrived, "writes": ex.writes} for ex in self.log if (rid := ex.headers.get(_RID))}
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    async def _sleep_until(self, target: float) -> None:
        delay = target - time.perf_counter()
        if delay > self.config.spin_s:
            await asyncio.sleep(delay - self.config.spin_s)
        while time.perf_counter() < target:  # noqa: ASYNC110 - a deliberate sub-ms spin
            await asyncio.sleep(0)

    def _cached_words(self, words: list[str]) -> int:
        size, chain, hits, leading = self.config.prefix_block_words, 0, 0, True
        if size <= 0:
            return 0
        for i in range(size, len(words) + 1, size):
            chain = hash((chain, *words[i - size : i]))
            leading = leading and chain in self._blocks
            hits += leading
            self._blocks.add(chain)
        return hits * size

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        cfg, body = self.config, orjson.loads(await request.read())
        number = len(self.log)
        exchange = Exchange(body, {k.lower(): v for k, v in request.headers.items()}, arrived)
        self.log.append(exchange)
        if cfg.fail_every and (number + 1) % cfg.fail_every == 0:
            return web.json_response({"error": {"message": "mock overload"}}, status=503)
        chat = request.path.endswith("/chat/completions")
        text = " ".join(_text(msg["content"]) for msg in body["messages"]) if chat else str(body["prompt"])
        words = text.split()
        n = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        usage: dict[str, Any] = {"prompt_tokens": len(words), "completion_tokens": n, "total_tokens": len(words) + n}
        usage["prompt_tokens_details"] = {"cached_tokens": self._cached_words(words)}
        tokens = [f"r{number}t{k} " for k in range(n)]
        exchange.reply = "".join(tokens)
        async with self._slot if cfg.serialize else contextlib.nullcontext():
            start = time.perf_counter() + cfg.first_token_delay_s
            headers = {cfg.engine_header: cfg.engine}
            if not body.get("stream"):
                await self._sleep_until(start + (n - 1) * cfg.per_token_delay_s)
                reply: Any = {"role": "assistant", "content": exchange.reply} if chat else exchange.reply
                choice = {"index": 0, "message" if chat else "text": reply, "finish_reason": "length"}
                whole = {"id": f"mock-{number}", "object": "chat.completion" if chat else "text_completion"}
                return web.json_response({**whole, "choices": [choice], "usage": usage}, headers=headers)
            resp = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
            await resp.prepare(request)
            options = body.get("stream_options") or {}
            continuous = bool(options.get("include_usage") and options.get("continuous_usage_stats"))
            step = max(1, cfg.tokens_per_chunk)
            kind = "chat.completion.chunk" if chat else "text_completion"
            head = {"id": f"mock-{number}", "object": kind, "created": int(time.time()), "model": cfg.model}
            for first in range(0, n, step):
                last = min(first + step, n) - 1
                piece_text = "".join(tokens[first : last + 1])
                choice = {"index": 0, "finish_reason": "length" if last == n - 1 else None}
                if chat:
                    choice["delta"] = {"content": piece_text, **({"role": "assistant"} if first == 0 else {})}
                else:
                    choice["text"] = piece_text
                chunk: dict[str, Any] = {**head, "choices": [choice]}
                if continuous:
                    done = last + 1
                    chunk["usage"] = {"prompt_tokens": len(words), "completion_tokens": done}
                await self._sleep_until(start + last * cfg.per_token_delay_s)
                exchange.writes.append(time.perf_counter())
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            tail = b""
            if options.get("include_usage"):
                tail = b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
            await resp.write(tail + b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp


def _text(content: str | list[dict[str, Any]]) -> str:
    """Text of a chat message content: a string, or a list of parts (``{"type": "text", "text": ...}``)."""
    return content if isinstance(content, str) else " ".join(str(p.get("text", "")) for p in content)


async def serve_forever(config: MockConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    """Run a mock until cancelled; prints its base URL as the first stdout line."""
    server = MockServer(config)
    url = await server.start(host, port)
    print(url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


@contextlib.contextmanager
def mock_subprocess(config: MockConfig, *, cpu: int | None = None) -> Iterator[str]:
    """Run a mock in a child process (optionally pinned to `cpu`); yield its base URL."""
    args = [sys.executable, "-m", "strata_bench.cli", "selfcheck", "--serve"]
    args += ["--first-token-ms", str(config.first_token_delay_s * 1000), "--per-token-ms"]
    args += [str(config.per_token_delay_s * 1000), "--tokens-per-chunk", str(config.tokens_per_chunk)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(proc.pid, {cpu})
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"mock server did not start (exit code {proc.poll()})")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass(frozen=True)
class SelfcheckResult:
    """Measured timing against the configured truth (ms). Each row: name, truth, measured
    distribution (error = measured − truth). The TTFT error of every request splits exactly
    into three rows: client send → mock handler, mock lateness, mock write → client stamp."""

    rows: tuple[tuple[str, float, Distribution], ...]
    requests: int
    failed: int
    parse_us_per_chunk: float

    def table(self) -> str:
        """Markdown table of the comparison."""
        lines = ["| metric (ms) | truth | mean | p50 | p99 | error mean | error p99 |", "|---|---|---|---|---|---|---|"]
        for name, truth, d in self.rows:
            cells = [fmt(truth), fmt(d.mean), fmt(d.p50), fmt(d.p99), f"{d.mean - truth:+.3f}", f"{d.p99 - truth:+.3f}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        tail = f"\n\n{self.requests} requests, {self.failed} failed; "
        tail += f"client parse cost {self.parse_us_per_chunk:.2f} µs/chunk (SSE split + JSON)"
        return "\n".join(lines) + tail


@contextlib.asynccontextmanager
async def _mock(config: MockConfig, in_process: bool, cpu: int | None) -> AsyncIterator[str]:
    if in_process:
        async with MockServer(config) as url:
            yield url
    else:
        with mock_subprocess(config, cpu=cpu) as url:
            yield url


async def _fetch_timings(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + "/mock/timings") as resp:
        resp.raise_for_status()
        timings: dict[str, Any] = orjson.loads(await resp.read())
        return timings


async def selfcheck(
    *,
    requests: int = 100,
    rate: float = 20.0,
    first_token_ms: float = 20.0,
    per_token_ms: float = 5.0,
    max_tokens: int = 32,
    prompt_words: int = 128,
    in_process: bool = False,
    pin: bool = True,
) -> SelfcheckResult:
    """Measure the client against a mock with known delays (Poisson arrivals at `rate`).

    With `pin` and >= 2 CPUs, the mock subprocess gets the last CPU and this process the
    others for the duration of the check (affinity restored afterwards).
    """
    config = MockConfig(first_token_delay_s=first_token_ms / 1000, per_token_delay_s=per_token_ms / 1000)
    plan = synthetic_plan(requests, rate=rate, prompt_words=prompt_words, max_tokens=max_tokens, seed=1)
    plan = [dataclasses.replace(p, headers={_RID: str(p.index)}) for p in plan]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = pin and not in_process and len(cpus) >= 2
    if pinned:
        os.sched_setaffinity(0, set(cpus[:-1]))
    try:
        async with _mock(config, in_process, cpus[-1] if pinned else None) as url:
            runner = LoadRunner(EndpointConfig(url, model=config.model), LoadConfig(mode="open"))
            result = await runner.run(plan, warmup=plan[:4])
            timings = await _fetch_timings(url)
    finally:
        if pinned:
            os.sched_setaffinity(0, set(cpus))
    ok = [r for r in result.records if m.is_ok(r) and str(r.index) in timings]
    t0, ms = result.monotonic_start, 1000.0
    series: dict[str, list[float]] = {k: [] for k in ("ttft", "itl", "lag", "transit", "late", "first", "all")}
    for r in ok:
        server = timings[str(r.index)]
        arrived, writes = server["arrived"], server["writes"]
        series["ttft"].append((m.ttft(r) or 0.0) * ms)
        series["itl"] += [g * ms for g in m.itl_gaps(r)]
        series["transit"].append((arrived - (t0 + r.sent_s)) * ms)
        series["late"].append((writes[0] - arrived - config.first_token_delay_s) * ms)
        series["first"].append((t0 + r.token_times_s[0] - writes[0]) * ms)
        series["all"] += [(t0 + t - w) * ms for t, w in zip(r.token_times_s, writes, strict=False)]
    series["lag"] = [m.send_lag(r) * ms for r in result.records]
    named = (
        ("TTFT", first_token_ms, "ttft"),
        ("ITL", per_token_ms, "itl"),
        ("send lag (sent − scheduled)", 0.0, "lag"),
        ("TTFT part: client send → mock handler", 0.0, "transit"),
        ("TTFT part: mock lateness (1st token)", 0.0, "late"),
        ("TTFT part: mock write → client stamp", 0.0, "first"),
        ("every token: mock write → client stamp", 0.0, "all"),
    )
    rows = tuple((name, truth, d) for name, truth, key in named if (d := describe(series[key])) is not None)
    if len(rows) != len(named):
        raise RuntimeError(f"self-check got no successful streamed request ({len(result.records)} records)")
    return SelfcheckResult(rows, len(plan), len(result.records) - len(ok), parse_cost_us())
