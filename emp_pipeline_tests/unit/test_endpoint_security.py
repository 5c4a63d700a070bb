"""Secrets travel over TLS, or plain only to loopback."""

from __future__ import annotations

import pytest

from emp_pipeline.endpoint_security import InsecureEndpointError, is_loopback, require_tls_off_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["10.0.0.5", "openapi.ctrader.com", "0.0.0.0", "", None, "127.0.0.1.evil.com"]
)
def test_other_hosts_are_not_loopback(host):
    assert not is_loopback(host)


@pytest.mark.parametrize(
    "url",
    ["https://openapi.ctrader.com", "http://127.0.0.1:8080", "http://localhost/apps", "http://[::1]:9000"],
)
def test_tls_or_loopback_is_accepted(url):
    assert (
        require_tls_off_loopback(url, variable="CTRADER_TOKEN_URL", tls_scheme="https", plain_scheme="http")
        == url
    )


def test_plain_http_to_another_machine_is_refused_by_name():
    with pytest.raises(InsecureEndpointError) as raised:
        require_tls_off_loopback(
            "http://user:secret@openapi.ctrader.com:80", variable="CTRADER_TOKEN_URL", tls_scheme="https",
            plain_scheme="http",
        )  # fmt: skip
    message = str(raised.value)
    assert message.startswith(
        "CTRADER_TOKEN_URL=http://openapi.ctrader.com:80 would send secrets unencrypted"
    )
    assert "use https://" in message and "secret" not in message.replace("secrets", "")


def test_plain_websocket_to_another_machine_is_refused_and_other_schemes_too():
    with pytest.raises(
        InsecureEndpointError, match=r"CTRADER_API_URL=ws://demo.ctraderapi.com:5036 .* use wss://"
    ):
        require_tls_off_loopback(
            "ws://demo.ctraderapi.com:5036", variable="CTRADER_API_URL", tls_scheme="wss", plain_scheme="ws"
        )
    assert require_tls_off_loopback("ws://127.0.0.1:5036", variable="X", tls_scheme="wss", plain_scheme="ws")
    with pytest.raises(InsecureEndpointError, match="must be a wss:// URL"):
        require_tls_off_loopback(
            "ftp://127.0.0.1", variable="CTRADER_API_URL", tls_scheme="wss", plain_scheme="ws"
        )
