"""A minimal service built on strata_runtime, run as a subprocess by the tests.

`GET /work?ms=N` holds one unit of in-flight work for N milliseconds, so tests can
check that SIGTERM drains it before the process exits.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from pydantic import Field

from strata_runtime import Broker, Service, ServiceSettings, service_config, service_main


class SampleSettings(ServiceSettings):
    model_config = service_config("sample")
    greeting: str = Field(default="hi", description="Returned by /work.")
    use_nats: bool = Field(default=False, description="Connect to NATS and require it for readiness.")


def build_app(settings: SampleSettings) -> Service:
    service = Service("sample", settings)
    holder: dict[str, Broker] = {}

    async def work(request: web.Request) -> web.Response:
        with service.inflight.track():
            await asyncio.sleep(int(request.query.get("ms", "0")) / 1000)
            return web.json_response({"greeting": settings.greeting})

    async def connect() -> None:
        holder["broker"] = await Broker.connect(settings.nats_url, "sample")
        service.probes.add_check("nats", lambda: holder["broker"].connected)

    async def close() -> None:
        if "broker" in holder:
            await holder["broker"].close()

    service.http.router.add_get("/work", work)
    if settings.use_nats:
        service.on_start.append(connect)
        service.on_stop.append(close)
    return service


if __name__ == "__main__":
    service_main("sample", SampleSettings, build_app)
