"""The router seam: `strata.route.v1.pick` request/reply over NATS.

One request per routed attempt, answered by any router replica of the queue group.
Every way of not getting a usable answer is one :class:`RouterUnavailable` with a
short reason (the label of `strata_gateway_route_fallback_total`). After "no
responders" the client does not ask again for `quiet_s`: until a router exists the
gateway routes locally without paying a NATS round trip per request; likewise after
`max_timeouts` timeouts in a row (a router that is there but cannot keep up is given a
rest instead of costing every request the whole timeout).
"""

from __future__ import annotations

import time

import nats.errors
from pydantic import ValidationError

from strata_contracts import subjects
from strata_contracts.messages import RouteDecision, RoutePick
from strata_runtime.messaging import Broker

__all__ = ["RouterClient", "RouterUnavailable"]


class RouterUnavailable(Exception):
    """No usable decision came back.

    Attributes:
        reason: timeout | no_responders | invalid_reply | too_large | disconnected.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"router unavailable ({reason}){': ' + detail if detail else ''}")
        self.reason = reason


class RouterClient:
    """Asks the router for an engine.

    Args:
        broker: the gateway's NATS connection.
        timeout_s: how long one pick may take (route_timeout_ms).
        quiet_s: after "no responders" (or `max_timeouts` timeouts in a row), do not ask
            for this long.
        max_timeouts: consecutive timeouts that make the client go quiet.
    """

    def __init__(self, broker: Broker, timeout_s: float, quiet_s: float = 1.0, max_timeouts: int = 5) -> None:
        self._broker = broker
        self._timeout_s = timeout_s
        self._quiet_s = quiet_s
        self._max_timeouts = max_timeouts
        self._timeouts = 0
        self._quiet_until = 0.0
        self._quiet_reason = "no_responders"

    @property
    def quiet_reason(self) -> str | None:
        """Why the client is not asking the router right now, or None when it is."""
        return self._quiet_reason if time.monotonic() < self._quiet_until else None

    async def pick(self, request: RoutePick) -> RouteDecision:
        """The router's decision for `request`.

        Raises:
            RouterUnavailable: no decision within the timeout, no router, or a bad reply.
        """
        quiet = self.quiet_reason
        if quiet is not None:
            raise RouterUnavailable(quiet)
        if not self._broker.connected:
            raise RouterUnavailable("disconnected")
        try:
            decision = await self._broker.request(subjects.ROUTE_PICK, request, RouteDecision, self._timeout_s)
        except nats.errors.NoRespondersError:
            self._go_quiet("no_responders")
            raise RouterUnavailable("no_responders") from None
        except (nats.errors.TimeoutError, TimeoutError):
            self._timeouts += 1
            if self._timeouts >= self._max_timeouts:
                self._go_quiet("timeout")
            raise RouterUnavailable("timeout") from None
        except ValidationError as exc:
            raise RouterUnavailable("invalid_reply", str(exc.errors(include_url=False)[0]["msg"])) from None
        except nats.errors.MaxPayloadError:
            raise RouterUnavailable("too_large") from None  # a prompt beyond the server's max_payload
        except nats.errors.Error as exc:
            raise RouterUnavailable("disconnected", repr(exc)) from None
        self._timeouts = 0
        return decision

    def _go_quiet(self, reason: str) -> None:
        self._timeouts = 0
        self._quiet_reason = reason
        self._quiet_until = time.monotonic() + self._quiet_s
