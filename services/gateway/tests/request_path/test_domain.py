"""The request path's pure parts: body parsing and rewrite, SSE handling, fleet, pickers, budget."""

from __future__ import annotations

import random
import time

import nats.errors
import orjson
import pytest

from strata_contracts.messages import EngineLoad, EngineRegistration, HashScheme, RoutePick
from strata_gateway.adapters.router_client import RouterClient, RouterUnavailable
from strata_gateway.domain.errors import normalize_upstream_error, stream_error_event
from strata_gateway.domain.fleet import EngineView, Fleet
from strata_gateway.domain.picking import LeastRequestPicker, RandomPicker, local_picker
from strata_gateway.domain.ports import GatewayError
from strata_gateway.domain.requests import Endpoint, choose_strategy, parse_request
from strata_gateway.domain.retry import RetryBudget
from strata_gateway.domain.sse import SseFramer, StreamTap

STRATEGIES = ["random", "least-request", "prefix-cache"]


def _parse(body: object, endpoint: Endpoint = Endpoint.CHAT) -> tuple[dict[str, object], bool]:
    parsed = parse_request(endpoint, orjson.dumps(body))
    return orjson.loads(parsed.upstream_body), parsed.client_usage


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("extra", "upstream_options", "client_usage"),
    [
        ({}, None, False),
        ({"stream": True}, {"include_usage": True, "continuous_usage_stats": False}, False),
        ({"stream": True, "stream_options": None}, {"include_usage": True, "continuous_usage_stats": False}, False),
        ({"stream": True, "stream_options": {}}, {}, True),  # vLLM: include_usage defaults to true
        ({"stream": True, "stream_options": {"include_usage": True}}, {"include_usage": True}, True),
        (
            {"stream": True, "stream_options": {"include_usage": False, "continuous_usage_stats": True}},
            {"include_usage": True, "continuous_usage_stats": False},
            False,
        ),
    ],
)
def test_usage_is_always_requested_upstream(
    extra: dict[str, object], upstream_options: dict[str, object] | None, client_usage: bool
) -> None:
    upstream, wants = _parse({**CHAT, **extra})
    assert upstream.get("stream_options") == upstream_options
    assert wants is client_usage


def test_a_body_needing_no_rewrite_is_forwarded_byte_for_byte() -> None:
    raw = b'{"model":"m","prompt":"x","top_k":3,"ignore_eos":true,  "cache_salt":"s"}'
    parsed = parse_request(Endpoint.COMPLETIONS, raw)
    assert parsed.upstream_body is raw


def test_unknown_and_vllm_fields_survive_the_rewrite() -> None:
    upstream, _ = _parse({**CHAT, "stream": True, "top_k": 5, "chat_template_kwargs": {"a": 1}, "x_new": [1]})
    assert upstream["top_k"] == 5
    assert upstream["chat_template_kwargs"] == {"a": 1}
    assert upstream["x_new"] == [1]


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": 3, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": "hi"}', "messages"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
    ],
)
def test_invalid_bodies_are_400_naming_the_parameter(raw: bytes, param: str | None) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_request(Endpoint.CHAT, raw)
    assert caught.value.status == 400
    assert (caught.value.param or "").startswith(param or "")
    assert (caught.value.param is None) is (param is None)


def test_routing_features_of_chat_and_token_prompts() -> None:
    chat = parse_request(
        Endpoint.CHAT,
        orjson.dumps(
            {
                "model": "m",
                "messages": [
                    {"role": "system", "content": "be"},
                    {"role": "user", "content": [{"type": "text", "text": "brief"}]},
                ],
                "max_completion_tokens": 9,
            }
        ),
    )
    assert (chat.prompt_text, chat.prompt_chars, chat.max_tokens) == ("be brief", 8, 9)
    tokens = parse_request(Endpoint.COMPLETIONS, b'{"model": "m", "prompt": [1, 2, 3], "max_tokens": 4}')
    assert (tokens.prompt_text, tokens.prompt_token_ids, tokens.prompt_chars) == (None, [1, 2, 3], 3)


def test_strategy_header_beats_key_default_beats_gateway_default() -> None:
    assert choose_strategy("prefix-cache", "random", "least-request", STRATEGIES) == "prefix-cache"
    assert choose_strategy(None, "random", "least-request", STRATEGIES) == "random"
    assert choose_strategy("", None, "least-request", STRATEGIES) == "least-request"
    with pytest.raises(GatewayError) as caught:
        choose_strategy("nope", None, "least-request", STRATEGIES)
    assert (caught.value.status, caught.value.param) == (400, "routing-strategy")


def test_framer_yields_whole_events_across_arbitrary_splits() -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
    for cut in range(1, len(stream)):
        framer = SseFramer()
        events = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert events == [b'data: {"a":1}\n\n', b'data: {"b":2}\n\n', b"data: [DONE]\n\n"]
        assert framer.pending == b""


def test_tap_strips_the_usage_chunk_only_when_the_client_did_not_ask() -> None:
    usage_chunk = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}\n\n'  # noqa: E501
    content = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
    for client_usage in (False, True):
        tap = StreamTap(client_usage)
        assert tap.inspect(content)
        assert tap.inspect(usage_chunk) is client_usage
        assert tap.inspect(b"data: [DONE]\n\n")
        assert (tap.usage.prompt_tokens, tap.usage.completion_tokens, tap.usage.cached_tokens) == (5, 2, 4)
        assert tap.done


def test_tap_notices_an_engine_error_event() -> None:
    tap = StreamTap(False)
    assert tap.inspect(b'data: {"error": {"message": "engine died", "code": 500}}\n\n')
    assert tap.error == "engine died"


def test_stream_error_event_is_vllm_style() -> None:
    event = stream_error_event(GatewayError(502, "broken", "api_error", code="upstream_error"))
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    assert orjson.loads(event[6:]) == {"error": {"message": "broken", "type": "api_error", "param": None, "code": 502}}


@pytest.mark.parametrize(
    ("body", "expected_message"),
    [
        (b'{"error":{"message":"m1","type":"BadRequestError","param":null,"code":400}}', "m1"),
        (b'{"object":"error","message":"m2","type":"BadRequestError","param":null,"code":400}', "m2"),
        (b"plain text", "plain text"),
        (b"", "engine returned HTTP 400"),
    ],
)
def test_engine_errors_keep_or_gain_the_envelope(body: bytes, expected_message: str) -> None:
    out = orjson.loads(normalize_upstream_error(400, body))
    assert set(out["error"]) == {"message", "type", "param", "code"}
    assert out["error"]["message"] == expected_message


def _registration(engine_id: str, model: str = "m", age_s: float = 0.0) -> EngineRegistration:
    return EngineRegistration(
        engine_id=engine_id, url=f"http://127.0.0.1:1/{engine_id}", model=model, max_model_len=100,  # type: ignore[arg-type]
        block_size=16, hash_scheme=HashScheme.SHA256, agent_id="a", heartbeat_ts=time.time() - age_s,
    )  # fmt: skip


def _load(engine_id: str, *, running: int = 0, waiting: int = 0, healthy: bool = True) -> EngineLoad:
    return EngineLoad(engine_id=engine_id, seq=0, ts=0.0, running=running, waiting=waiting, kv_usage=0.0,
                      prompt_tps=0.0, generation_tps=0.0, healthy=healthy)  # fmt: skip


def test_fleet_routes_only_fresh_healthy_unejected_engines() -> None:
    fleet = Fleet(stale_s=30, load_stale_s=2)
    for reg in (_registration("a"), _registration("b"), _registration("c", age_s=60), _registration("d"),
                _registration("x", model="other")):  # fmt: skip
        fleet.upsert(reg)
    mono = time.monotonic()
    fleet.update_load(_load("b", healthy=False), mono)
    fleet.eject("d", until=mono + 5)
    ids = [e.engine_id for e in fleet.routable("m", now=time.time(), mono=mono)]
    assert ids == ["a"]
    assert fleet.knows_model("m")
    assert not fleet.knows_model("nope")
    later = [e.engine_id for e in fleet.routable("m", now=time.time(), mono=mono + 10)]  # load stale, ejection over
    assert later == ["a", "b", "d"]
    assert [e.model for e in fleet.models(time.time())] == ["m", "other"]
    fleet.remove("a")
    assert "a" not in fleet.engine_ids


def test_fleet_counts_in_flight_per_engine_idle_ones_at_zero() -> None:
    fleet = Fleet(stale_s=30, load_stale_s=2)
    fleet.upsert(_registration("a"))
    fleet.upsert(_registration("b"))
    assert (fleet.acquire("a"), fleet.acquire("a"), fleet.release("a")) == (1, 2, 1)
    assert fleet.in_flight() == {"a": 1, "b": 0}
    fleet.release("a")
    fleet.release("a")  # never below zero
    assert fleet.in_flight() == {"a": 0, "b": 0}


def test_fleet_follows_heartbeats_and_moves_of_model_or_url() -> None:
    fleet = Fleet(stale_s=30, load_stale_s=2)
    fleet.upsert(_registration("a", age_s=60))
    assert fleet.routable("m", now=time.time(), mono=time.monotonic()) == []  # stale
    fleet.upsert(_registration("a"))  # a heartbeat: same model and URL
    assert [e.engine_id for e in fleet.routable("m", now=time.time(), mono=time.monotonic())] == ["a"]
    moved = _registration("a", model="other").model_copy(update={"url": "http://127.0.0.1:2/"})
    fleet.upsert(moved)
    assert fleet.routable("m", now=time.time(), mono=time.monotonic()) == []
    assert not fleet.knows_model("m")
    [view] = fleet.routable("other", now=time.time(), mono=time.monotonic())
    assert view.url == "http://127.0.0.1:2"


def _view(engine_id: str, in_flight: int, waiting: int = 0, running: int = 0) -> EngineView:
    return EngineView(engine_id, "http://x", "m", in_flight, running, waiting)


def test_least_request_prefers_fewest_in_flight_then_waiting_then_running() -> None:
    picker = LeastRequestPicker(random.Random(0))
    assert picker.pick([_view("a", 2), _view("b", 1), _view("c", 3)]).engine_id == "b"
    assert picker.pick([_view("a", 1, waiting=3), _view("b", 1, waiting=1)]).engine_id == "b"
    assert picker.pick([_view("a", 1, 0, running=5), _view("b", 1, 0, running=2)]).engine_id == "b"
    seen = {picker.pick([_view("a", 0), _view("b", 0)]).engine_id for _ in range(50)}
    assert seen == {"a", "b"}  # exact ties are broken at random


def test_unknown_local_strategies_fall_back_to_least_request() -> None:
    pickers = {"random": RandomPicker(), "least-request": LeastRequestPicker()}
    assert local_picker("prefix-cache", pickers).name == "least-request"
    assert local_picker("random", pickers).name == "random"


def test_retry_budget_bounds_concurrent_retries() -> None:
    budget = RetryBudget(percent=20, min_concurrency=2)
    assert budget.try_acquire(requests_in_flight=1)
    assert budget.try_acquire(requests_in_flight=1)
    assert not budget.try_acquire(requests_in_flight=1)  # min concurrency reached
    assert budget.try_acquire(requests_in_flight=100)  # 20 % of 100 = 20
    budget.release()
    assert budget.active == 2


class _SlowBroker:
    connected = True

    def __init__(self) -> None:
        self.requests = 0

    async def request(self, *_: object) -> None:
        self.requests += 1
        raise nats.errors.TimeoutError


async def test_router_client_rests_a_router_that_keeps_timing_out() -> None:
    broker = _SlowBroker()
    client = RouterClient(broker, timeout_s=0.01, quiet_s=60, max_timeouts=3)  # type: ignore[arg-type]
    pick = RoutePick(request_id="r", model="m", prompt_chars=1, deadline_ms=10)
    for _ in range(5):
        with pytest.raises(RouterUnavailable) as caught:
            await client.pick(pick)
        assert caught.value.reason == "timeout"
    assert broker.requests == 3  # then quiet: no more round trips
    assert client.quiet_reason == "timeout"
