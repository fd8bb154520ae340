"""HTTP client of one engine's server: `/metrics`, `/v1/models`, `/version`.

All engines of an agent share one aiohttp session (keep-alive pool), owned by the app.
Every call has its own short timeout; transport failures and error statuses surface
as :class:`EngineUnreachable`, a body that is not JSON as `ValueError`.
"""

from __future__ import annotations

from typing import Any, Protocol

import aiohttp

__all__ = ["EngineClient", "EngineUnreachable", "HttpEngineClient"]


class EngineUnreachable(ConnectionError):
    """The engine did not answer in time, refused, or answered with an error status."""


class EngineClient(Protocol):
    """What the agent asks of an engine's HTTP surface."""

    async def metrics(self, timeout: float) -> str:
        """The Prometheus text of `/metrics`."""
        ...

    async def models(self, timeout: float) -> Any:
        """The JSON body of `/v1/models`."""
        ...

    async def version(self, timeout: float) -> Any:
        """The JSON body of `/version`, or None when the engine has no such route."""
        ...


class HttpEngineClient:
    """:class:`EngineClient` over aiohttp.

    Args:
        session: the shared session (not closed here).
        base_url: the engine's base URL, e.g. `http://10.0.0.5:8000`.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")

    async def metrics(self, timeout: float) -> str:
        """GET /metrics as text."""
        text: str = await self._get("/metrics", timeout, as_json=False)
        return text

    async def models(self, timeout: float) -> Any:
        """GET /v1/models as JSON."""
        return await self._get("/v1/models", timeout, as_json=True)

    async def version(self, timeout: float) -> Any:
        """GET /version as JSON; None on 404."""
        return await self._get("/version", timeout, as_json=True, missing_ok=True)

    async def _get(self, path: str, timeout: float, *, as_json: bool, missing_ok: bool = False) -> Any:
        url = f"{self._base}{path}"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                if missing_ok and response.status == 404:
                    return None
                response.raise_for_status()
                return await response.json(content_type=None) if as_json else await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnreachable(f"GET {url}: {exc!r}") from exc
