"""Settings: environment prefixes, shared variables, one-line errors."""

from __future__ import annotations

import pytest
from pydantic import Field

from strata_runtime.settings import ServiceSettings, SettingsError, load_settings, service_config, settings_table


class RouterLikeSettings(ServiceSettings):
    model_config = service_config("router")
    pick_timeout_ms: int = Field(default=20, gt=0, description="Deadline of one pick.")


def test_prefixed_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATA_ROUTER_PORT", "8123")
    monkeypatch.setenv("STRATA_ROUTER_PICK_TIMEOUT_MS", "7")
    settings = load_settings(RouterLikeSettings)
    assert (settings.port, settings.pick_timeout_ms) == (8123, 7)


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATA_ROUTER_PORT", "abc")
    with pytest.raises(SettingsError) as info:
        load_settings(RouterLikeSettings)
    message = str(info.value)
    assert "STRATA_ROUTER_PORT='abc'" in message
    assert "\n" not in message


def test_every_bad_value_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATA_ROUTER_PORT", "70000")
    monkeypatch.setenv("STRATA_ROUTER_LOG_LEVEL", "LOUD")
    with pytest.raises(
        SettingsError,
        match=r"STRATA_ROUTER_PORT=.*STRATA_ROUTER_LOG_LEVEL=|STRATA_ROUTER_LOG_LEVEL=.*STRATA_ROUTER_PORT=",
    ):
        load_settings(RouterLikeSettings)


def test_shared_nats_url_and_prefixed_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATA_NATS_URL", "nats://shared:4222")
    assert load_settings(RouterLikeSettings).nats_url == "nats://shared:4222"
    monkeypatch.setenv("STRATA_ROUTER_NATS_URL", "nats://own:4222")
    assert load_settings(RouterLikeSettings).nats_url == "nats://own:4222"


def test_other_services_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATA_GATEWAY_PORT", "abc")
    assert load_settings(RouterLikeSettings).port == 0


def test_settings_table_lists_env_names_and_defaults() -> None:
    rows = {env: (default, desc) for env, default, desc in settings_table(RouterLikeSettings)}
    assert rows["STRATA_ROUTER_PICK_TIMEOUT_MS"] == ("20", "Deadline of one pick.")
    assert "STRATA_ROUTER_NATS_URL" in rows


def test_flag_overrides_win_and_are_named_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATA_ROUTER_PORT", "8123")
    assert load_settings(RouterLikeSettings, {"port": "--port"}, port="9000").port == 9000
    with pytest.raises(SettingsError, match=r"--port='x'"):
        load_settings(RouterLikeSettings, {"port": "--port"}, port="x")


class ListSettings(ServiceSettings):
    model_config = service_config("router")
    engines: list[str] = Field(default_factory=list, description="Engine ids.")


def test_bad_json_in_a_complex_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATA_ROUTER_ENGINES", "[not json")
    with pytest.raises(SettingsError, match="STRATA_ROUTER_ENGINES: not valid JSON"):
        load_settings(ListSettings)
