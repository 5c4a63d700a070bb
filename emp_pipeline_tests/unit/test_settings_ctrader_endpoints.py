"""Settings refuse cTrader endpoints that would send secrets without TLS, and read the request method."""

from __future__ import annotations

import pytest

from emp_pipeline.settings import Settings, SettingsError


def _settings(tmp_path, **environment: str) -> Settings:
    return Settings.from_env({"EMP_HOME": str(tmp_path), **environment})


def test_the_defaults_are_tls_and_get(tmp_path):
    settings = _settings(tmp_path)
    assert settings.token.token_url == "https://openapi.ctrader.com"
    assert settings.live.ctrader_api_url == "wss://demo.ctraderapi.com:5036"
    assert settings.token.request_method == "GET"


@pytest.mark.parametrize(
    ("variable", "url", "says"),
    [
        ("CTRADER_TOKEN_URL", "http://openapi.ctrader.com", "use https://"),
        ("CTRADER_API_URL", "ws://live.ctraderapi.com:5036", "use wss://"),
        ("CTRADER_API_URL", "https://live.ctraderapi.com:5036", "must be a wss:// URL"),
    ],
)
def test_plain_endpoints_off_loopback_are_refused_at_start_up_by_name(tmp_path, variable, url, says):
    with pytest.raises(SettingsError) as raised:
        _settings(tmp_path, **{variable: url})
    assert str(raised.value).startswith(f"{variable}=") and says in str(raised.value)


def test_plain_endpoints_on_loopback_stay_allowed_for_local_servers(tmp_path):
    settings = _settings(
        tmp_path, CTRADER_TOKEN_URL="http://127.0.0.1:8123", CTRADER_API_URL="ws://127.0.0.1:5036"
    )
    assert (settings.token.token_url, settings.live.ctrader_api_url) == (
        "http://127.0.0.1:8123",
        "ws://127.0.0.1:5036",
    )


@pytest.mark.parametrize(("configured", "method"), [("post", "POST"), ("GET", "GET")])
def test_the_token_request_method_is_a_setting(tmp_path, configured, method):
    assert _settings(tmp_path, CTRADER_TOKEN_REQUEST_METHOD=configured).token.request_method == method


def test_an_unknown_token_request_method_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"CTRADER_TOKEN_REQUEST_METHOD='PATCH' is not one of GET, POST"):
        _settings(tmp_path, CTRADER_TOKEN_REQUEST_METHOD="PATCH")
