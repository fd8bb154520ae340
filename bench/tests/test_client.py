"""The load client against the loopback mock server: timing correctness, exact token counts,
coordinated omission, sessions, stop conditions and cancellation. No wall-clock speed asserts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from strata_bench.analysis import SLO, summarize
from strata_bench.analysis import metrics as m
from strata_bench.client import EndpointConfig, LoadConfig, LoadRunner, synthetic_plan
from strata_bench.client.sse import SSEDecoder
from strata_bench.model import PlannedRequest
from strata_bench.selfcheck import MockConfig, MockServer, mock_subprocess, selfcheck
from strata_testing.poll import poll_until

StartMock = Callable[..., Awaitable[tuple[MockServer, str]]]


@pytest.fixture
async def start_mock() -> AsyncIterator[StartMock]:
    """Factory: start an in-process mock with the given MockConfig fields; closed after the test."""
    servers: list[MockServer] = []

    async def start(**knobs: object) -> tuple[MockServer, str]:
        server = MockServer(MockConfig(**knobs))  # type: ignore[arg-type]
        servers.append(server)
        return server, await server.start()

    yield start
    for server in servers:
        await server.close()


def _endpoint(url: str, **kw: object) -> EndpointConfig:
    return EndpointConfig(url, model="mock-model", **kw)  # type: ignore[arg-type]


def _chat(index: int, at_s: float, text: str, *, session: str | None = None, turn: int = 0) -> PlannedRequest:
    return PlannedRequest(
        index=index,
        at_s=at_s,
        max_tokens=4,
        messages=[{"role": "user", "content": text}],
        session_id=session,
        turn=turn,
    )


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_ttft_on_20ms_mock_is_at_least_the_delay_and_every_token_is_recorded(
    start_mock: StartMock, api: str
) -> None:
    server, url = await start_mock(first_token_delay_s=0.020, per_token_delay_s=0.002)
    plan = synthetic_plan(20, rate=100.0, prompt_words=12, max_tokens=8)
    result = await LoadRunner(_endpoint(url, api=api)).run(plan)

    assert [r.index for r in result.records] == list(range(20))
    assert result.stopped_by == "complete"
    assert len(server.log) == 20
    for rec in result.records:
        assert rec.error_type is None
        assert rec.status == 200
        assert (m.ttft(rec) or 0.0) >= 0.020
        assert rec.sent_s >= rec.scheduled_s  # never sent early
        assert rec.completion_tokens == 8
        assert rec.chunk_tokens == [1] * 8
        assert len(rec.token_times_s) == 8
        assert rec.token_times_s == sorted(rec.token_times_s)
        assert rec.end_s is not None
        assert rec.end_s >= rec.token_times_s[-1]
        assert rec.prompt_tokens == 12
        assert rec.engine == "mock-0"


async def test_multi_token_chunks_are_counted_exactly_with_continuous_usage(start_mock: StartMock) -> None:
    _, url = await start_mock(first_token_delay_s=0.001, per_token_delay_s=0.001, tokens_per_chunk=3)
    plan = synthetic_plan(3, prompt_words=4, max_tokens=8)
    exact = await LoadRunner(_endpoint(url)).run(plan)
    assert [r.chunk_tokens for r in exact.records] == [[3, 3, 2]] * 3
    assert all(len(m.itl_gaps(r)) == 8 - 3 for r in exact.records)

    # Without per-chunk usage a chunk counts as one token; the total still comes from usage.
    per_chunk = await LoadRunner(_endpoint(url, continuous_usage=False)).run(plan)
    assert [(r.chunk_tokens, r.completion_tokens) for r in per_chunk.records] == [([1, 1, 1], 8)] * 3


async def test_non_streaming_request_records_one_arrival_and_exact_usage(start_mock: StartMock) -> None:
    _, url = await start_mock(first_token_delay_s=0.005, per_token_delay_s=0.0)
    result = await LoadRunner(_endpoint(url, stream=False)).run(synthetic_plan(2, prompt_words=5, max_tokens=6))
    for rec in result.records:
        assert rec.completion_tokens == 6
        assert rec.prompt_tokens == 5
        assert rec.first_token_s == rec.end_s
        assert rec.extra == {"stream": False}
        assert m.tpot(rec) is None


async def test_request_options_and_headers_reach_the_server(start_mock: StartMock) -> None:
    server, url = await start_mock(first_token_delay_s=0.0, per_token_delay_s=0.0)
    endpoint = _endpoint(url, routing_strategy="prefix-cache", headers={"x-tenant": "t1"}, extra_body={"seed": 3})
    plan = [PlannedRequest(index=0, at_s=0.0, max_tokens=5, prompt="hi", headers={"x-request": "r0"})]
    await LoadRunner(endpoint).run(plan)
    (exchange,) = server.log
    assert exchange.body["ignore_eos"] is True
    assert exchange.body["max_tokens"] == 5
    assert exchange.body["seed"] == 3
    assert exchange.body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert exchange.headers["routing-strategy"] == "prefix-cache"
    assert exchange.headers["x-tenant"] == "t1"
    assert exchange.headers["x-request"] == "r0"


async def test_latency_from_schedule_exceeds_latency_from_send_when_client_is_saturated(start_mock: StartMock) -> None:
    # A server of capacity 1 (serialised) behind a client cap of 1, offered 5x its capacity:
    # requests queue in the client, so send lag grows and only latency-from-schedule shows it.
    _, url = await start_mock(first_token_delay_s=0.010, per_token_delay_s=0.001, serialize=True)
    plan = synthetic_plan(24, rate=300.0, arrival="constant", prompt_words=4, max_tokens=4)
    result = await LoadRunner(_endpoint(url), LoadConfig(max_concurrent_sessions=1)).run(plan)
    summary = summarize(result.records)

    lat = summary.latency_ms
    assert lat["e2e_sched"].p50 > lat["e2e"].p50
    assert lat["ttft_sched"].p50 > lat["ttft"].p50
    lags = [m.send_lag(r) for r in result.records]
    assert lags[-1] > lags[len(lags) // 2] > lags[1]  # the backlog grows with every request
    assert summary.client_behind


async def test_multi_turn_sessions_resend_history_with_the_real_answers_in_order(start_mock: StartMock) -> None:
    server, url = await start_mock(first_token_delay_s=0.002, per_token_delay_s=0.001)
    plan = [
        _chat(0, 0.0, "a0", session="A"),
        _chat(1, 0.0, "b0", session="B"),
        _chat(2, 0.0, "a1", session="A", turn=1),
        _chat(3, 0.0, "b1", session="B", turn=1),
        _chat(4, 0.0, "a2", session="A", turn=2),
    ]
    result = await LoadRunner(_endpoint(url)).run(plan)
    replies = {ex.body["messages"][-1]["content"]: ex.reply for ex in server.log}
    sent = {ex.body["messages"][-1]["content"]: ex.body["messages"] for ex in server.log}
    assert sent["a2"] == [
        {"role": "user", "content": "a0"},
        {"role": "assistant", "content": replies["a0"]},
        {"role": "user", "content": "a1"},
        {"role": "assistant", "content": replies["a1"]},
        {"role": "user", "content": "a2"},
    ]
    assert sent["b1"][1] == {"role": "assistant", "content": replies["b0"]}
    assert replies["b0"] != replies["a0"]
    by_index = {r.index: r for r in result.records}
    for prev, nxt in ((0, 2), (2, 4), (1, 3)):
        assert by_index[nxt].sent_s >= (by_index[prev].end_s or 0.0)  # strictly after the answer


async def test_completions_sessions_prepend_previous_prompt_and_answer(start_mock: StartMock) -> None:
    server, url = await start_mock(first_token_delay_s=0.0, per_token_delay_s=0.0)
    plan = [PlannedRequest(index=i, at_s=0.0, max_tokens=3, prompt=f"p{i} ", session_id="s", turn=i) for i in range(3)]
    await LoadRunner(_endpoint(url, api="completions")).run(plan)
    prompts = [ex.body["prompt"] for ex in server.log]
    assert prompts[1] == prompts[0] + server.log[0].reply + "p1 "
    assert prompts[2] == prompts[1] + server.log[1].reply + "p2 "


async def test_session_cap_runs_sessions_one_after_another(start_mock: StartMock) -> None:
    _, url = await start_mock(first_token_delay_s=0.002, per_token_delay_s=0.001)
    plan = [
        _chat(i, 0.0, f"s{s}t{t}", session=f"S{s}", turn=t) for i, (s, t) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)])
    ]
    result = await LoadRunner(_endpoint(url), LoadConfig(max_concurrent_sessions=1)).run(plan)
    spans: dict[str | None, tuple[float, float]] = {}
    for rec in result.records:
        lo, hi = spans.get(rec.session_id, (rec.sent_s, rec.end_s or 0.0))
        spans[rec.session_id] = (min(lo, rec.sent_s), max(hi, rec.end_s or 0.0))
    (_a_lo, a_hi), (b_lo, _b_hi) = sorted(spans.values())
    assert a_hi <= b_lo


async def test_closed_loop_keeps_at_most_n_in_flight_and_stops_at_max_requests(start_mock: StartMock) -> None:
    server, url = await start_mock(first_token_delay_s=0.003, per_token_delay_s=0.001)
    plan = synthetic_plan(12, prompt_words=3, max_tokens=3)
    result = await LoadRunner(_endpoint(url), LoadConfig(mode="closed", concurrency=3, max_requests=9)).run(plan)
    assert len(result.records) == 9 == len(server.log)
    assert result.stopped_by == "max_requests"
    events = sorted([(r.sent_s, 1) for r in result.records] + [(r.end_s or 0.0, -1) for r in result.records])
    depth = peak = 0
    for _, step in events:
        depth += step
        peak = max(peak, depth)
    assert peak <= 3


async def test_duration_stops_sending_at_the_schedule_and_warmup_is_not_recorded(start_mock: StartMock) -> None:
    server, url = await start_mock(first_token_delay_s=0.0, per_token_delay_s=0.0)
    plan = synthetic_plan(20, rate=200.0, arrival="constant", prompt_words=3, max_tokens=2)  # at_s = 0, 5, 10 … ms
    result = await LoadRunner(_endpoint(url), LoadConfig(duration_s=0.0275)).run(plan, warmup=plan[:3])
    assert [r.index for r in result.records] == [0, 1, 2, 3, 4, 5]
    assert result.stopped_by == "duration"
    assert len(server.log) == 3 + 6


async def test_errors_timeouts_and_connect_failures_are_typed(start_mock: StartMock) -> None:
    _, url = await start_mock(first_token_delay_s=0.0, per_token_delay_s=0.0, fail_every=2)
    result = await LoadRunner(_endpoint(url)).run(synthetic_plan(4, prompt_words=3, max_tokens=2))
    assert [(r.status, r.error_type) for r in result.records] == [(200, None), (503, "http")] * 2
    assert summarize(result.records, SLO(ttft_s=10.0)).errors == {"http 503": 2}

    _, slow = await start_mock(first_token_delay_s=0.0, per_token_delay_s=0.5)
    timed = await LoadRunner(_endpoint(slow, timeout_s=0.1)).run(synthetic_plan(2, prompt_words=3, max_tokens=3))
    assert {r.error_type for r in timed.records} == {"timeout"}

    server, dead = await start_mock()
    await server.close()
    refused = await LoadRunner(_endpoint(dead)).run(synthetic_plan(2, prompt_words=3, max_tokens=3))
    assert {r.error_type for r in refused.records} == {"connect"}


async def test_deadline_cancels_in_flight_requests_and_leaves_no_task() -> None:
    with mock_subprocess(MockConfig(first_token_delay_s=0.0, per_token_delay_s=0.5)) as url:
        plan = synthetic_plan(5, prompt_words=3, max_tokens=20)
        result = await LoadRunner(_endpoint(url), LoadConfig(deadline_s=0.3)).run(plan)
    assert result.stopped_by == "deadline"
    assert len(result.records) == 5
    assert {r.error_type for r in result.records} == {"cancelled"}
    assert all(r.end_s is not None and r.first_token_s is None for r in result.records)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_stop_and_cancelling_the_run_record_cancelled_requests(start_mock: StartMock) -> None:
    server, url = await start_mock(first_token_delay_s=0.0, per_token_delay_s=0.5)
    plan = synthetic_plan(4, prompt_words=3, max_tokens=20)

    runner = LoadRunner(_endpoint(url))
    running = asyncio.create_task(runner.run(plan))
    await poll_until(lambda: _received(server, 4), timeout=5.0, what="4 requests at the mock")
    runner.stop()
    result = await running
    assert result.stopped_by == "stopped"
    assert {r.error_type for r in result.records} == {"cancelled"}

    runner = LoadRunner(_endpoint(url))
    running = asyncio.create_task(runner.run(plan))
    await poll_until(lambda: _received(server, 8), timeout=5.0, what="4 more requests at the mock")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert [r.error_type for r in runner.records] == ["cancelled"] * 4
    leftover = [t for t in asyncio.all_tasks() if "LoadRunner" in t.get_coro().__qualname__]  # type: ignore[union-attr]
    assert leftover == []


async def _received(server: MockServer, n: int) -> bool:
    return len(server.log) >= n


def test_sse_decoder_handles_split_events_crlf_comments_and_multiline_data() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.feed(b": 1}\n\n: ping\n\ndata: [DONE]\r\n\r\n") == [b'{"a": 1}', b"[DONE]"]
    assert decoder.feed(b"data: x\ndata: y\n\ndata: tail") == [b"x\ny"]
    assert decoder.flush() == [b"tail"]


async def test_selfcheck_splits_each_ttft_error_into_send_server_and_receive_parts() -> None:
    result = await selfcheck(
        requests=12, rate=200.0, first_token_ms=5.0, per_token_ms=1.0, max_tokens=4, in_process=True
    )
    rows = {name: (truth, d) for name, truth, d in result.rows}
    assert result.failed == 0
    assert rows["TTFT"][1].min >= 5.0
    assert rows["TTFT"][1].count == 12
    assert rows["every token: mock write → client stamp"][1].count == 12 * 4
    parts = ("client send → mock handler", "mock lateness (1st token)", "mock write → client stamp")
    parts_mean = sum(rows[f"TTFT part: {p}"][1].mean for p in parts)
    assert parts_mean == pytest.approx(rows["TTFT"][1].mean - 5.0, abs=1e-6)  # an exact identity per request
    assert all(rows[f"TTFT part: {p}"][1].min >= 0.0 for p in parts if p != "mock lateness (1st token)")
    assert "| TTFT | 5 |" in result.table()
