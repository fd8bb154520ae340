"""The OpenAPI document: served = checked in; and a bounded schemathesis fuzz of a running gateway.

The fuzz sends schema-valid and schema-violating requests (bodies and headers) to every
operation and requires: no 5xx, every error in the envelope, statuses and content
types as documented, invalid data rejected with a 4xx. Half of the valid bodies name
the model a (fast, fake) engine serves, so the proxy path is fuzzed too, not only the
404 for unknown models. The gateway runs on this test's event loop; hypothesis drives
the synchronous schemathesis client from a worker thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from strata_gateway.handlers.openapi import openapi_document

CHECKED_IN = Path(__file__).resolve().parents[2] / "openapi.json"
MAX_EXAMPLES = 40  # per operation and generation mode: about 200 requests, a few seconds
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


async def test_served_document_equals_the_checked_in_file(start_gateway: Callable[..., Awaitable[Any]]) -> None:
    gateway = await start_gateway()
    async with aiohttp.ClientSession() as session, session.get(f"{gateway.url}/openapi.json") as response:
        served = await response.json()
    assert served == json.loads(CHECKED_IN.read_text()), (
        "regenerate: python -m strata_gateway.handlers.openapi > services/gateway/openapi.json"
    )
    assert served == openapi_document()


def _with_model(case: schemathesis.Case, model: str) -> schemathesis.Case:
    if isinstance(case.body, dict):
        case.body = {**case.body, "model": model}
    return case


def _fuzz(base_url: str, model: str) -> int:
    """Run every operation's examples; returns the number of requests sent."""
    schema = schemathesis.openapi.from_dict(openapi_document())
    # Auth is off in this gateway: no negative cases about the API key (a missing key is accepted).
    schema.config.generation.update(with_security_parameters=False)
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
                continue  # GET /v1/models has nothing to get wrong once the key is left out
            strategy = operation.as_strategy(generation_mode=mode)
            if mode is GenerationMode.POSITIVE and operation.method.upper() == "POST":
                strategy = st.one_of(strategy, strategy.map(lambda case: _with_model(case, model)))

            @given(case=strategy)
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: schemathesis.Case) -> None:
                nonlocal sent
                response = case.call(base_url=base_url, headers={"Authorization": "Bearer fuzz"}, timeout=10)
                sent += 1
                assert response.status_code < 500, (case.body, response.text[:500])
                if response.status_code >= 400:
                    error = response.json()["error"]
                    assert set(error) == {"message", "type", "param", "code"}, response.text
                case.validate_response(response, checks=CHECKS)

            check()
    return sent


@pytest.mark.integration
@pytest.mark.timeout(240)
async def test_fuzzing_finds_no_server_error_and_only_enveloped_errors(
    start_gateway: Callable[..., Awaitable[Any]],
    fake_engine: Callable[..., Awaitable[Any]],
    register: Callable[..., Awaitable[str]],
    model: str,
) -> None:
    for _ in range(2):
        await register((await fake_engine(model)).url, model)
    gateway = await start_gateway(max_body_bytes=64 * 1024)
    sent = await asyncio.to_thread(_fuzz, gateway.url, model)
    assert sent >= 5 * 10
    served = [r for r in gateway.sink.records if r.status == 200]
    assert served, "no fuzzed request reached an engine"
