"""Build the engine-simulator service: N engines plus the service's probes and `/engines`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from strata_enginesim.domain.latency import LatencyProfile, load_profile
from strata_enginesim.domain.tokenizer import SimTokenizer
from strata_enginesim.engine import EngineConfig
from strata_enginesim.fleet import EngineOptions, SimFleet
from strata_enginesim.settings import EngineSimSettings
from strata_runtime.service import Service
from strata_runtime.shutdown import InFlight

__all__ = ["build_app", "run_single_engine"]


def _engine_config(settings: EngineSimSettings, profile: LatencyProfile, tokenizer: SimTokenizer) -> EngineConfig:
    return EngineConfig(
        model_name=settings.served_model_name,
        profile=profile,
        eos_token_id=tokenizer.eos_token_id,
        output_token_ids=tokenizer.output_token_ids,
        block_size=settings.block_size,
        num_blocks=settings.num_blocks,
        max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        max_model_len=settings.max_model_len,
        enable_prefix_caching=settings.enable_prefix_caching,
        hash_scheme=settings.hash_scheme,
        hash_seed=settings.hash_seed,
        time_scale=settings.time_scale,
        eos_probability=settings.eos_probability,
    )


def _fleet(settings: EngineSimSettings, profile: LatencyProfile, inflight: InFlight) -> SimFleet:
    tokenizer = SimTokenizer()
    options = EngineOptions(
        host=settings.host,
        base_port=settings.base_port,
        served_model_name=settings.served_model_name,
        engine_id_prefix=settings.engine_id_prefix,
        kv_events=settings.kv_events,
        kv_events_base_port=settings.kv_events_base_port,
        kv_events_shape=settings.kv_events_shape,
        engine_config=_engine_config(settings, profile, tokenizer),
        api={
            "served_model_name": settings.served_model_name,
            "model_root": f"/models/{settings.served_model_name}",
            "enable_prompt_tokens_details": settings.enable_prompt_tokens_details,
            "force_include_usage": settings.force_include_usage,
        },
    )
    return SimFleet(settings.engines, options, tokenizer, inflight)


def build_app(settings: EngineSimSettings) -> Service:
    """The simulator service; engines start in the on_start hook."""
    service = Service("enginesim", settings)
    fleet = _fleet(settings, load_profile(settings.profile), service.inflight)

    async def engines(_: web.Request) -> web.Response:
        return web.json_response(
            {"model": settings.served_model_name, "engines": [e.describe() for e in fleet.engines]}
        )

    service.http.router.add_get("/engines", engines)
    service.probes.add_check("engines", fleet.serving)
    service.on_start.append(fleet.start)
    service.on_stop.append(fleet.stop)
    return service


@asynccontextmanager
async def run_single_engine(profile: LatencyProfile, model: str, **overrides: object) -> AsyncIterator[str]:
    """One engine with `profile` on a free loopback port, without KV events; yields its URL."""
    settings = EngineSimSettings(served_model_name=model, kv_events=False, **overrides)  # type: ignore[arg-type]
    fleet = _fleet(settings, profile, InFlight())
    await fleet.start()
    try:
        yield fleet.engines[0].url
    finally:
        await fleet.stop()
