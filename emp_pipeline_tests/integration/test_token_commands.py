"""`emp token authorize` and `emp token status` through their streams, against Redis and a local server."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet

from emp_pipeline.auth.commands import add_token_commands, authorize, status
from emp_pipeline.settings import Settings
from emp_pipeline_tests.fakes.ctrader_token_server import FakeCTraderTokenServer
from emp_pipeline_tests.integration.token_fixtures import CLIENT_ID, CLIENT_SECRET, REDIS_URL

pytestmark = pytest.mark.redis


def settings_for(server: FakeCTraderTokenServer, key_prefix: str, tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env(
        {
            "EMP_HOME": str(tmp_path),
            "REDIS_URL": REDIS_URL,
            "CTRADER_CLIENT_ID": CLIENT_ID,
            "CTRADER_CLIENT_SECRET": CLIENT_SECRET,
            "CTRADER_TOKEN_URL": server.base_url,
            "CTRADER_REDIRECT_URI": "http://127.0.0.1/callback",
            "EMP_TOKEN_KEY_PREFIX": key_prefix,
            **extra,
        }
    )


def test_authorize_prints_the_consent_url_reads_the_code_and_stores_the_pair(
    token_server: FakeCTraderTokenServer, key_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(token_server, key_prefix, tmp_path, EMP_TOKEN_KEY=Fernet.generate_key().decode())
    code = token_server.issue_code()
    out = io.StringIO()

    exit_code = authorize(settings, stdin=io.StringIO(f"http://127.0.0.1/callback?code={code}\n"), out=out)

    printed = out.getvalue()
    assert exit_code == 0, printed
    assert f"{token_server.base_url}/apps/auth?client_id={CLIENT_ID}&redirect_uri=" in printed
    assert "stored token pair version 1" in printed and "encrypted at rest" in printed
    assert token_server.count("codes_exchanged") == 1
    access, refresh = token_server.state.issued[-1]
    assert access not in printed and refresh not in printed and CLIENT_SECRET not in printed

    status_out = io.StringIO()
    assert status(settings, out=status_out) == 0
    report = status_out.getvalue()
    assert "status:               valid" in report and "version:              1" in report
    assert "refresh due:          no" in report and access not in report


def test_authorize_with_a_used_code_fails_and_stores_nothing(
    token_server: FakeCTraderTokenServer, key_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(token_server, key_prefix, tmp_path)
    code = token_server.issue_code()
    assert authorize(settings, code=code, out=io.StringIO()) == 0
    out = io.StringIO()
    assert authorize(settings, code=code, out=out) == 1
    assert "authorisation failed" in out.getvalue() and "ACCESS_DENIED" in out.getvalue()


def test_authorize_can_adopt_the_refresh_token_from_the_environment(
    token_server: FakeCTraderTokenServer, key_prefix: str, tmp_path: Path
) -> None:
    _, refresh = token_server.issue_pair()
    settings = settings_for(token_server, key_prefix, tmp_path, CTRADER_REFRESH_TOKEN=refresh)
    assert authorize(settings, from_refresh_token=True, out=io.StringIO()) == 0
    assert token_server.count("refreshes") == 1 and not token_server.is_valid_refresh_token(refresh)


def test_status_reports_missing_and_refused_tokens(
    token_server: FakeCTraderTokenServer, key_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(token_server, key_prefix, tmp_path)
    out = io.StringIO()
    assert status(settings, out=out) == 1 and "emp token authorize" in out.getvalue()

    authorize(settings, code=token_server.issue_code(), out=io.StringIO())
    redis.Redis.from_url(REDIS_URL).hset(
        f"{key_prefix}token:{CLIENT_ID}", mapping={"status": "reauth_required", "last_error": "refused"}
    )
    out = io.StringIO()
    assert status(settings, out=out) == 1
    assert "reauth_required" in out.getvalue() and "last error:           refused" in out.getvalue()


@pytest.mark.parametrize(
    ("status_key", "says"),
    [
        (None, "encrypted but EMP_TOKEN_KEY is not set"),
        ("other", "encrypted with a different EMP_TOKEN_KEY"),
        ("malformed", "EMP_TOKEN_KEY is not a valid Fernet key"),
    ],
    ids=["key missing", "wrong key", "malformed key"],
)
def test_status_of_an_encrypted_token_fails_and_says_why_without_the_right_key(
    token_server: FakeCTraderTokenServer, key_prefix: str, tmp_path: Path, status_key: str | None, says: str
) -> None:
    key = Fernet.generate_key().decode()
    authorize(
        settings_for(token_server, key_prefix, tmp_path, EMP_TOKEN_KEY=key), code=token_server.issue_code()
    )
    keys = {"other": Fernet.generate_key().decode(), "malformed": "not-a-fernet-key"}
    extra = {"EMP_TOKEN_KEY": keys[status_key]} if status_key else {}
    out = io.StringIO()

    assert status(settings_for(token_server, key_prefix, tmp_path, **extra), out=out) == 1

    assert says in out.getvalue()


def test_status_with_the_right_key_says_the_pair_is_encrypted(
    token_server: FakeCTraderTokenServer, key_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(token_server, key_prefix, tmp_path, EMP_TOKEN_KEY=Fernet.generate_key().decode())
    authorize(settings, code=token_server.issue_code(), out=io.StringIO())
    out = io.StringIO()
    assert status(settings, out=out) == 0
    assert "encryption:           encrypted at rest (EMP_TOKEN_KEY decrypts it)" in out.getvalue()
    assert "WARNING" not in out.getvalue()


def test_status_and_authorize_warn_about_plaintext_tokens(
    token_server: FakeCTraderTokenServer, key_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(token_server, key_prefix, tmp_path)
    out = io.StringIO()
    authorize(settings, code=token_server.issue_code(), out=out)
    assert "NOT encrypted at rest: the cTrader tokens are stored in Redis in plaintext" in out.getvalue()
    out = io.StringIO()
    assert status(settings, out=out) == 0  # it works, and says what is wrong with it
    assert "encryption:           NOT encrypted at rest (EMP_TOKEN_KEY is not set)" in out.getvalue()
    assert "WARNING: the cTrader tokens are stored in Redis in plaintext" in out.getvalue()

    # A key set afterwards: the plaintext pair is still readable, and the next refresh encrypts it.
    keyed = settings_for(token_server, key_prefix, tmp_path, EMP_TOKEN_KEY=Fernet.generate_key().decode())
    out = io.StringIO()
    assert status(keyed, out=out) == 0
    assert "plaintext in Redis; the next refresh stores it encrypted with EMP_TOKEN_KEY" in out.getvalue()


def test_status_with_redis_down_names_the_server(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"EMP_HOME": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0", "CTRADER_CLIENT_ID": CLIENT_ID}
    )
    out = io.StringIO()
    assert status(settings, out=out) == 1 and "redis://127.0.0.1:1/0" in out.getvalue()


def test_parser_wiring_calls_the_commands(
    token_server: FakeCTraderTokenServer, key_prefix: str, tmp_path: Path
) -> None:
    parser = argparse.ArgumentParser(prog="emp")
    add_token_commands(parser.add_subparsers(dest="command", required=True))
    settings = settings_for(token_server, key_prefix, tmp_path)
    args = parser.parse_args(["token", "authorize", "--code", token_server.issue_code()])
    out = io.StringIO()
    assert args.handler(args, settings, out) == 0 and "stored token pair" in out.getvalue()
    args = parser.parse_args(["token", "status"])
    out = io.StringIO()
    assert args.handler(args, settings, out) == 0 and "status:               valid" in out.getvalue()
