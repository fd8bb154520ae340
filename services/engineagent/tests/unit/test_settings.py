"""Settings: engines from JSON, and start-up errors that name the variable."""

from __future__ import annotations

import json

import pytest

from strata_contracts.messages import HashScheme
from strata_engineagent.settings import EngineAgentSettings
from strata_runtime import SettingsError, load_settings

ENGINE = {"engine_id": "e1", "url": "http://127.0.0.1:8000", "kv_events_endpoint": "tcp://127.0.0.1:5557"}


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRATA_ENGINEAGENT_ENGINES", raising=False)

    settings = load_settings(EngineAgentSettings)

    assert settings.engines == []
    assert (settings.scrape_interval_ms, settings.heartbeat_interval_s) == (75, 2.0)


def test_engines_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    second = {"engine_id": "e2", "url": "http://h:1", "hash_scheme": "sha256_cbor", "block_size": 16}
    monkeypatch.setenv("STRATA_ENGINEAGENT_ENGINES", json.dumps([ENGINE, second]))

    settings = load_settings(EngineAgentSettings)

    assert [e.engine_id for e in settings.engines] == ["e1", "e2"]
    assert settings.engines[0].kv_events_endpoint == "tcp://127.0.0.1:5557"
    assert settings.engines[1].hash_scheme is HashScheme.SHA256_CBOR


@pytest.mark.parametrize(
    ("var", "value", "reason"),
    [
        ("STRATA_ENGINEAGENT_ENGINES", "not json", "not valid JSON"),
        ("STRATA_ENGINEAGENT_ENGINES", json.dumps([ENGINE, ENGINE]), "appears twice"),
        ("STRATA_ENGINEAGENT_ENGINES", json.dumps([{**ENGINE, "engine_id": "a.b"}]), "not a valid NATS subject"),
        ("STRATA_ENGINEAGENT_ENGINES", json.dumps([{**ENGINE, "engine_id": "a:b"}]), "not a valid NATS subject token"),
        ("STRATA_ENGINEAGENT_ENGINES", json.dumps([{**ENGINE, "kv_events_endpoint": "http://x"}]), "not a ZMQ"),
        ("STRATA_ENGINEAGENT_ENGINES", json.dumps([{**ENGINE, "block_size": 0}]), "greater than 0"),
        ("STRATA_ENGINEAGENT_ENGINES", json.dumps([{**ENGINE, "hash_scheme": "md5"}]), "Input should be"),
        ("STRATA_ENGINEAGENT_ENGINES", json.dumps([{**ENGINE, "colour": "red"}]), "Extra inputs"),
        (
            "STRATA_ENGINEAGENT_ENGINES",
            json.dumps([{"engine_id": "e", "url": "http://h", "kv_replay_endpoint": "tcp://h:1"}]),
            "without kv_events_endpoint",
        ),
        ("STRATA_ENGINEAGENT_SCRAPE_INTERVAL_MS", "5", "greater than or equal to 10"),
        ("STRATA_ENGINEAGENT_SCRAPE_INTERVAL_MS", "2000", "less than or equal to 1000"),
        ("STRATA_ENGINEAGENT_HEARTBEAT_INTERVAL_S", "0", "greater than 0"),
        ("STRATA_ENGINEAGENT_REGISTRY_TTL_S", "1", "must exceed heartbeat_interval_s"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str, reason: str) -> None:
    monkeypatch.setenv(var, value)

    with pytest.raises(SettingsError) as excinfo:
        load_settings(EngineAgentSettings)

    assert var in str(excinfo.value)
    assert reason in str(excinfo.value)
