"""When the heartbeat puts, deletes or waits, and what a scrape reports as a change."""

from __future__ import annotations

import pytest

from strata_engineagent.domain.load import CacheConfig
from strata_engineagent.domain.registry import EngineState, RegistryAction, registry_action
from strata_engineagent.settings import EngineSpec

SPEC = EngineSpec.model_validate({"engine_id": "e1", "url": "http://127.0.0.1:1"})
CACHE = CacheConfig(block_size=16, num_gpu_blocks=100, hash_algo="sha256", prefix_caching=True)
TTL = 10.0


@pytest.mark.parametrize(
    ("last_ok", "registered", "now", "action"),
    [
        (None, False, 100.0, RegistryAction.WAIT),
        (None, True, 100.0, RegistryAction.WAIT),
        (95.0, False, 100.0, RegistryAction.PUT),
        (95.0, True, 100.0, RegistryAction.PUT),
        (89.0, True, 100.0, RegistryAction.DELETE),
        (89.0, False, 100.0, RegistryAction.WAIT),
    ],
)
def test_registry_action(last_ok: float | None, registered: bool, now: float, action: RegistryAction) -> None:
    state = EngineState(SPEC, last_ok=last_ok)

    assert registry_action(state, registered=registered, now=now, ttl=TTL) is action


def test_changes_reported_by_scrapes() -> None:
    state = EngineState(SPEC)
    assert state.scrape_failed()  # the first failure is news
    assert not state.scrape_failed()

    assert state.scrape_ok(1.0, CACHE, TTL)  # first contact
    assert not state.scrape_ok(2.0, CACHE, TTL)
    assert not state.scrape_ok(3.0, None, TTL)  # no info gauge this time: keep the last one
    assert state.cache == CACHE
    assert state.scrape_ok(4.0, CacheConfig(32, 100, "sha256", True), TTL)  # reconfigured
    assert state.scrape_failed()
    assert not state.scrape_failed()
    assert state.scrape_ok(20.0, None, TTL)  # back after more than the TTL
    assert state.scrapes_ok == 5
