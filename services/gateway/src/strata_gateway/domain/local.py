"""Local implementations of the ports, for auth-disabled deployments and tests.

* :class:`OpenAuthenticator`: every caller is tenant ``default`` (no key needed).
* :class:`NoLimits`: admits everything; settle and release do nothing.
"""

from __future__ import annotations

from typing import Final

from strata_gateway.domain.ports import Admission, Principal

__all__ = ["DEFAULT_TENANT", "NoLimits", "OpenAuthenticator"]

DEFAULT_TENANT: Final = "default"


class OpenAuthenticator:
    """Authenticator of an open gateway: one principal, whatever the header says.

    Args:
        default_strategy: the principal's default strategy (None = the gateway's).
    """

    def __init__(self, default_strategy: str | None = None) -> None:
        self._principal = Principal(tenant_id=DEFAULT_TENANT, key_id=None, default_strategy=default_strategy)

    async def authenticate(self, authorization: str | None) -> Principal:
        """Return the single open principal (never raises)."""
        del authorization
        return self._principal


class _Unlimited:
    """An admission that charges nothing."""

    def settle(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Nothing to charge."""
        del prompt_tokens, completion_tokens

    def release(self) -> None:
        """Nothing to free."""


class NoLimits:
    """A limiter that admits every request."""

    _ADMISSION: Final = _Unlimited()

    async def admit(self, principal: Principal) -> Admission:
        """Admit `principal` (never raises)."""
        del principal
        return self._ADMISSION
