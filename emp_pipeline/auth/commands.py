"""`emp token authorize` and `emp token status`: the two things a person does with the cTrader token.

Both take their input and output streams so tests can drive them; neither ever prints a token value.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import TextIO
from urllib.parse import parse_qs, urlsplit

from emp_pipeline.auth.build import build_token_manager, build_token_store
from emp_pipeline.auth.errors import TokenError, TokenKeyError
from emp_pipeline.auth.oauth_client import token_request_method
from emp_pipeline.auth.token_store import (
    PLAINTEXT_AT_REST_WARNING,
    RedisTokenStore,
    StoredEncryption,
    TokenStatus,
)
from emp_pipeline.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _iso(epoch: float | None) -> str:
    return "never" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def code_from_input(text: str) -> str:
    """Accept the bare code or the whole redirect URL the browser landed on (`...?code=...`)."""
    text = text.strip()
    if "code=" in text:
        codes = parse_qs(urlsplit(text).query or text.split("?", 1)[-1]).get("code")
        if codes:
            return codes[0]
    return text


def authorize(
    settings: Settings,
    *,
    code: str | None = None,
    redirect_uri: str | None = None,
    scope: str = "trading",
    from_refresh_token: bool = False,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
) -> int:
    """Print the consent URL, take the code (argument or stdin), exchange it and store the pair."""
    if not settings.token.client_id or not settings.token.client_secret:
        out.write("CTRADER_CLIENT_ID and CTRADER_CLIENT_SECRET must be set to authorise the cTrader app.\n")
        return EXIT_USAGE
    try:
        manager = build_token_manager(
            client_id=settings.token.client_id,
            client_secret=settings.token.client_secret,
            redis_url=settings.redis_url,
            token_url=settings.token.token_url,
            key_prefix=settings.token.key_prefix,
            token_key=settings.token.key,
            refresh_margin_s=settings.token.refresh_margin_s,
            method=token_request_method(settings.token.request_method),
        )
        if from_refresh_token:
            if not settings.token.refresh_token:
                out.write("--from-refresh-token needs CTRADER_REFRESH_TOKEN to be set.\n")
                return EXIT_USAGE
            state = manager.authorize_with_refresh_token(settings.token.refresh_token)
        else:
            redirect = redirect_uri or settings.token.redirect_uri
            if not redirect:
                out.write(
                    "a redirect URI registered for the app is needed: pass --redirect-uri or set "
                    "CTRADER_REDIRECT_URI.\n"
                )
                return EXIT_USAGE
            out.write(
                f"Open this URL, sign in and allow access:\n  {manager.authorization_url(redirect, scope)}\n"
            )
            if code is None:
                out.write("Paste the code (or the whole URL you were redirected to) within one minute: ")
                out.flush()
                code = code_from_input(stdin.readline())
            if not code:
                out.write("no code given; nothing stored.\n")
                return EXIT_USAGE
            state = manager.authorize_with_code(code, redirect)
    except TokenError as exc:
        out.write(f"authorisation failed: {exc}\n")
        return EXIT_FAILED
    encryption = (
        "encrypted at rest" if settings.token.key else f"NOT encrypted at rest: {PLAINTEXT_AT_REST_WARNING}"
    )
    out.write(
        f"stored token pair version {state.version} for client {settings.token.client_id} "
        f"({encryption}); access token expires {_iso(state.expires_at)}\n"
    )
    return EXIT_OK


def _encryption_line(store: RedisTokenStore) -> tuple[str, str | None]:
    """The `encryption:` line and, when the stored pair cannot be used with the configured key, why."""
    try:
        stored = store.stored_encryption()
    except TokenKeyError as exc:
        return "UNREADABLE with the configured EMP_TOKEN_KEY", str(exc)
    if stored is StoredEncryption.ENCRYPTED:
        return "encrypted at rest (EMP_TOKEN_KEY decrypts it)", None
    if stored is StoredEncryption.PLAINTEXT and store.encrypts:
        return "plaintext in Redis; the next refresh stores it encrypted with EMP_TOKEN_KEY", None
    return "NOT encrypted at rest (EMP_TOKEN_KEY is not set)", None


def status(settings: Settings, *, out: TextIO = sys.stdout) -> int:
    """Print the stored token's health (never a token); exit 1 when it is missing, refused, expired, or
    cannot be decrypted with the configured EMP_TOKEN_KEY."""
    if not settings.token.client_id:
        out.write("CTRADER_CLIENT_ID is not set: no cTrader token is configured.\n")
        return EXIT_USAGE
    try:
        store = build_token_store(
            client_id=settings.token.client_id,
            redis_url=settings.redis_url,
            key_prefix=settings.token.key_prefix,
            token_key=settings.token.key,
            socket_timeout_s=3.0,
        )
        state = store.read_state()
        encryption, key_problem = _encryption_line(store) if state is not None else ("", None)
    except TokenError as exc:
        out.write(f"{exc}\n")
        return EXIT_FAILED
    if state is None:
        out.write(
            f"no cTrader token stored for client {settings.token.client_id}: run `emp token authorize`\n"
        )
        return EXIT_FAILED
    left = state.seconds_to_expiry(time.time())
    margin = settings.token.refresh_margin_s
    in_flight = f"yes, since {_iso(state.inflight_started_at)}" if state.inflight_fingerprint else "no"
    lines = [
        f"client:               {settings.token.client_id} ({store.key})",
        f"status:               {state.status.value}",
        f"version:              {state.version}",
        f"expires:              {_iso(state.expires_at)} ({left / 3600:.1f} h left)",
        f"refresh due:          {'yes' if left < margin else 'no'} (margin {margin / 3600:.1f} h)",
        f"last refresh:         {_iso(state.last_refresh_at)}",
        f"consecutive failures: {state.consecutive_failures}",
        f"refresh in flight:    {in_flight}",
        f"encryption:           {encryption}",
    ]
    if state.last_error:
        lines.append(f"last error:           {state.last_error}")
    out.write("\n".join(lines) + "\n")
    if not store.encrypts:
        out.write(f"WARNING: {PLAINTEXT_AT_REST_WARNING}\n")
    if key_problem:
        out.write(f"the stored token cannot be used: {key_problem}\n")
        return EXIT_FAILED
    if state.status is TokenStatus.REAUTH_REQUIRED:
        out.write("the token needs re-authorisation: run `emp token authorize`\n")
        return EXIT_FAILED
    return EXIT_OK if left > 0 else EXIT_FAILED


def add_token_commands(commands: argparse._SubParsersAction) -> None:
    """Register `token authorize` and `token status`; handlers take (args, settings, out) like the others."""
    token = commands.add_parser("token", help="cTrader OAuth token kept in Redis")
    token_commands = token.add_subparsers(dest="token_command", required=True)

    authorize_parser = token_commands.add_parser(
        "authorize", help="print the consent URL, exchange the code and store the token pair"
    )
    authorize_parser.add_argument("--code", help="the consent code (otherwise read from stdin)")
    authorize_parser.add_argument(
        "--redirect-uri", help="redirect URI registered for the app (CTRADER_REDIRECT_URI)"
    )
    authorize_parser.add_argument(
        "--scope",
        default="trading",
        choices=("trading", "accounts"),
        help="what the app may do: trade, or only read accounts",
    )
    authorize_parser.add_argument(
        "--from-refresh-token",
        action="store_true",
        help="adopt CTRADER_REFRESH_TOKEN (spends it once) instead of the consent flow",
    )
    authorize_parser.set_defaults(
        handler=lambda args, settings, out: authorize(
            settings,
            code=args.code,
            redirect_uri=args.redirect_uri,
            scope=args.scope,
            from_refresh_token=args.from_refresh_token,
            stdin=sys.stdin,
            out=out,
        )
    )
    status_parser = token_commands.add_parser(
        "status", help="expiry, version, status and failures of the token"
    )
    status_parser.set_defaults(handler=lambda args, settings, out: status(settings, out=out))
