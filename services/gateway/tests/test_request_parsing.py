"""Request bodies: the field-by-field check of usual bodies agrees with the strict pydantic schema.

`parse_request` takes bodies of the usual shapes without building the pydantic model;
anything else goes through the model. The fast check must never accept what the schema
rejects, and must read the same fields from what it accepts.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strata_gateway.domain.ports import GatewayError
from strata_gateway.domain.requests import Endpoint, _model_fields, _plain_fields, parse_request

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=False), st.text(max_size=5))
_anything = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
_part = st.one_of(st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(st.text(max_size=5), _scalars)}),
                  _anything)  # fmt: skip
_content = st.one_of(st.text(max_size=8), st.none(), st.lists(_part, max_size=3), _anything)
_message = st.one_of(
    st.fixed_dictionaries({"role": st.one_of(st.sampled_from(["user", "system"]), _scalars)},
                          optional={"content": _content, "name": st.text(max_size=3)}),
    _anything,
)  # fmt: skip
_options = st.one_of(
    st.fixed_dictionaries({}, optional={"include_usage": _scalars, "continuous_usage_stats": _scalars}), _anything
)
_prompt = st.one_of(
    st.text(max_size=8), st.lists(st.text(max_size=3), max_size=3), st.lists(st.integers(0, 99), max_size=4),
    st.lists(st.lists(st.integers(0, 9), max_size=2), max_size=2), st.lists(_scalars, max_size=3), _anything,
)  # fmt: skip
_common = {
    "stream": st.one_of(st.booleans(), _scalars),
    "stream_options": _options,
    "max_tokens": st.one_of(st.integers(-2, 100), _scalars),
    "user": _scalars,
    "temperature": _scalars,
}
_model = st.one_of(st.sampled_from(["m", "llama"]), st.text(max_size=3), _scalars)
chat_bodies = st.fixed_dictionaries(
    {"model": _model, "messages": st.one_of(st.lists(_message, max_size=3), _anything)},
    optional={**_common, "max_completion_tokens": st.one_of(st.integers(-2, 100), _scalars)},
)
completion_bodies = st.fixed_dictionaries({"model": _model, "prompt": _prompt}, optional=_common)


def _verdict(endpoint: Endpoint, body: dict[str, Any]) -> object:
    try:
        return _model_fields(endpoint, body)
    except GatewayError as exc:
        return exc


def _agree(endpoint: Endpoint, body: dict[str, Any]) -> None:
    plain = _plain_fields(endpoint, body)
    if plain is not None:
        assert _verdict(endpoint, body) == plain, body


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(chat_bodies)
def test_the_fast_check_of_chat_bodies_agrees_with_the_schema(body: dict[str, Any]) -> None:
    _agree(Endpoint.CHAT, body)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(completion_bodies)
def test_the_fast_check_of_completion_bodies_agrees_with_the_schema(body: dict[str, Any]) -> None:
    _agree(Endpoint.COMPLETIONS, body)


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (Endpoint.CHAT, {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
        (
            Endpoint.CHAT,
            {
                "model": "m",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ),
        (Endpoint.COMPLETIONS, {"model": "m", "prompt": "once", "stream": False, "temperature": 0.2}),
        (Endpoint.COMPLETIONS, {"model": "m", "prompt": [1, 2, 3], "user": "u"}),
    ],
)
def test_usual_bodies_take_the_fast_check_and_read_as_the_schema_reads_them(
    endpoint: Endpoint, body: dict[str, Any]
) -> None:
    plain = _plain_fields(endpoint, body)
    assert plain is not None
    assert plain == _model_fields(endpoint, body)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": True},  # strict: no bool ints
        {"model": "", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"content": "no role"}]},
        {"model": "m", "messages": [{"role": "user", "content": 3}]},
        {"model": "m", "messages": [{"role": "user"}], "stream_options": {"include_usage": "yes"}},
    ],
)
def test_bodies_the_schema_rejects_are_rejected_with_its_message(body: dict[str, Any]) -> None:
    assert _plain_fields(Endpoint.CHAT, body) is None
    with pytest.raises(GatewayError) as caught:
        parse_request(Endpoint.CHAT, orjson.dumps(body))
    assert caught.value.status == 400
