"""Raw frames against the local cTrader server, and TLS: the protocol rules the client relies on."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from emp_pipeline.broker.ctrader_broker import CTraderBroker
from emp_pipeline.broker.ctrader_client import CTraderConfig
from emp_pipeline.broker.interface import BrokerConnectionError
from emp_pipeline_tests.fakes.ctrader_server import FakeCTraderServer, FakeTokenProvider

ACCOUNT = 4242


@pytest.fixture
def server() -> Iterator[FakeCTraderServer]:
    with FakeCTraderServer(account_ids=(ACCOUNT,)) as running:
        yield running


def ask(ws: ClientConnection, payload_type: int, payload: dict[str, Any], msg_id: str) -> dict[str, Any]:
    ws.send(json.dumps({"clientMsgId": msg_id, "payloadType": payload_type, "payload": payload}))
    while True:
        frame = json.loads(ws.recv(timeout=2))
        if frame.get("clientMsgId") == msg_id:
            return frame


def test_server_enforces_application_then_account_authorisation(server: FakeCTraderServer) -> None:
    token = server.issue_access_token()
    account_auth = {"ctidTraderAccountId": ACCOUNT, "accessToken": token}
    with connect(server.url) as ws:
        early = ask(ws, 2102, account_auth, "1")
        assert (early["payloadType"], early["payload"]["errorCode"]) == (2142, "CH_CLIENT_NOT_AUTHENTICATED")
        wrong = ask(ws, 2100, {"clientId": server.client_id, "clientSecret": "nope"}, "2")
        assert wrong["payload"]["errorCode"] == "CH_CLIENT_AUTH_FAILURE"
        assert (
            ask(ws, 2100, {"clientId": server.client_id, "clientSecret": server.client_secret}, "3")[
                "payloadType"
            ]
            == 2101
        )
        no_account = ask(ws, 2114, {"ctidTraderAccountId": ACCOUNT}, "4")
        assert no_account["payload"]["errorCode"] == "ACCOUNT_NOT_AUTHORIZED"
        bad_token = ask(ws, 2102, {"ctidTraderAccountId": ACCOUNT, "accessToken": "forged"}, "5")
        assert bad_token["payload"]["errorCode"] == "CH_ACCESS_TOKEN_INVALID"
        assert ask(ws, 2102, account_auth, "6")["payloadType"] == 2103
        assert ask(ws, 2102, account_auth, "7")["payload"]["errorCode"] == "ALREADY_LOGGED_IN"
        symbols = ask(ws, 2114, {"ctidTraderAccountId": ACCOUNT}, "8")["payload"]["symbol"]
        eurusd = next(s["symbolId"] for s in symbols if s["symbolName"] == "EURUSD")
        detail = ask(ws, 2116, {"ctidTraderAccountId": ACCOUNT, "symbolId": [eurusd]}, "9")["payload"][
            "symbol"
        ]
        assert detail[0]["digits"] == 5 and detail[0]["minVolume"] == 100_000


def test_market_order_answers_accepted_then_filled_with_the_request_msg_id(server: FakeCTraderServer) -> None:
    token = server.issue_access_token()
    with connect(server.url) as ws:
        ask(ws, 2100, {"clientId": server.client_id, "clientSecret": server.client_secret}, "a")
        ask(ws, 2102, {"ctidTraderAccountId": ACCOUNT, "accessToken": token}, "b")
        order = {
            "ctidTraderAccountId": ACCOUNT,
            "symbolId": 1,
            "orderType": 1,
            "tradeSide": 1,
            "volume": 100_000,
            "clientOrderId": "raw-1",
        }
        ws.send(json.dumps({"clientMsgId": "c", "payloadType": 2106, "payload": order}))
        first, second = json.loads(ws.recv(timeout=2)), json.loads(ws.recv(timeout=2))
    assert [first["payload"]["executionType"], second["payload"]["executionType"]] == [2, 3]
    assert first["clientMsgId"] == second["clientMsgId"] == "c"
    assert second["payload"]["deal"]["executionPrice"] == pytest.approx(1.08510)
    assert second["payload"]["order"]["clientOrderId"] == "raw-1"


def test_malformed_json_gets_invalid_request_and_the_socket_closes(server: FakeCTraderServer) -> None:
    with connect(server.url) as ws:
        ws.send("{not json")
        assert json.loads(ws.recv(timeout=2))["payload"]["errorCode"] == "INVALID_REQUEST"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=2)


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_tls_certificates_are_verified_by_default(tmp_path: Path, server: FakeCTraderServer) -> None:
    """A wss:// endpoint with a certificate nobody vouches for must be refused, not silently trusted."""
    cert_path, key_path = _self_signed_certificate(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_path, key_path)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    ports: list[int] = []
    stop: list[asyncio.Future[None]] = []

    async def handler(ws: Any) -> None:
        await ws.wait_closed()

    async def run() -> None:
        async with serve(handler, "127.0.0.1", 0, ssl=tls) as tls_server:
            ports.append(next(iter(tls_server.sockets)).getsockname()[1])
            stop.append(loop.create_future())
            started.set()
            await stop[0]

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert started.wait(5)
    config = CTraderConfig(
        url=f"wss://127.0.0.1:{ports[0]}",
        client_id="id",
        client_secret="secret",
        account_id=ACCOUNT,
        max_reconnect_attempts=1,
        request_timeout_s=2.0,
    )
    try:
        with (
            CTraderBroker(config, FakeTokenProvider(server)) as broker,
            pytest.raises(BrokerConnectionError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            broker.connect()
    finally:
        loop.call_soon_threadsafe(stop[0].set_result, None)
        thread.join(5)
        loop.close()
