"""A local cTrader token endpoint over real HTTP on loopback, strict like the real one.

`/apps/token` takes GET query parameters or a POST form body, checks the client credentials, issues rotating
pairs with `expiresIn`, and refuses a spent refresh token or code with HTTP 200 and an `errorCode` (cTrader
style). Failure hooks: answer N requests with an HTTP status (503), delay answers, or refuse the next grant.
Counters let tests assert "exactly one refresh".
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

EXPIRES_IN_S = 2_628_000


@dataclass
class _State:
    client_id: str
    client_secret: str
    expires_in: int = EXPIRES_IN_S
    valid_refresh_tokens: set[str] = field(default_factory=set)
    codes: dict[str, float] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    fail_statuses: list[int] = field(default_factory=list)
    terminal_errors: list[str] = field(default_factory=list)
    delay_s: float = 0.0
    snake_case: bool = False
    accepted_methods: frozenset[str] = frozenset({"GET", "POST"})
    issued: list[tuple[str, str]] = field(default_factory=list)


class FakeCTraderTokenServer:
    """Start with `with FakeCTraderTokenServer(...) as server:`; `server.base_url` is the endpoint root."""

    def __init__(self, client_id: str = "test-client", client_secret: str = "test-secret") -> None:
        self.state = _State(client_id=client_id, client_secret=client_secret)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-ctrader-token",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeCTraderTokenServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- set-up and failure injection -------------------------------------------------------------------

    def issue_pair(self) -> tuple[str, str]:
        """A valid (access, refresh) pair, as if a person had authorised the app earlier."""
        with self._lock:
            return self._issue_locked()

    def issue_code(self) -> str:
        """A consent code valid for one minute, what the redirect after the consent page carries."""
        code = "code-" + secrets.token_urlsafe(12)
        with self._lock:
            self.state.codes[code] = time.monotonic() + 60
        return code

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self.state.fail_statuses.extend([status] * count)

    def refuse_next(self, error_code: str = "ACCESS_DENIED") -> None:
        with self._lock:
            self.state.terminal_errors.append(error_code)

    def set_delay(self, seconds: float) -> None:
        with self._lock:
            self.state.delay_s = seconds

    def accept_only(self, method: str) -> None:
        """Answer any other HTTP method with 405, as a server that knows one of them would."""
        with self._lock:
            self.state.accepted_methods = frozenset({method})

    def set_snake_case(self, enabled: bool) -> None:
        with self._lock:
            self.state.snake_case = enabled

    def count(self, name: str) -> int:
        """Counters: requests, requests_GET, requests_POST, refreshes, refused_refreshes, codes_exchanged,
        injected_failures, refused_methods."""
        with self._lock:
            return self.state.counts[name]

    def is_valid_refresh_token(self, token: str) -> bool:
        with self._lock:
            return token in self.state.valid_refresh_tokens

    # --- the endpoint ---------------------------------------------------------------------------------------

    def _issue_locked(self) -> tuple[str, str]:
        access, refresh = "acc-" + secrets.token_urlsafe(18), "ref-" + secrets.token_urlsafe(18)
        self.state.valid_refresh_tokens.add(refresh)
        self.state.issued.append((access, refresh))
        return access, refresh

    def _answer(self, method: str, params: dict[str, str]) -> tuple[int, dict[str, object]]:
        with self._lock:
            state = self.state
            state.counts["requests"] += 1
            state.counts[f"requests_{method}"] += 1
            if method not in state.accepted_methods:
                state.counts["refused_methods"] += 1
                return 405, {"description": f"{method} is not allowed"}
            delay = state.delay_s
        if delay:
            time.sleep(delay)
        with self._lock:
            if state.fail_statuses:
                state.counts["injected_failures"] += 1
                return state.fail_statuses.pop(0), {"description": "service unavailable"}
            if (
                params.get("client_id") != state.client_id
                or params.get("client_secret") != state.client_secret
            ):
                return 200, _error("CH_CLIENT_AUTH_FAILURE", "bad client credentials")
            if state.terminal_errors:
                return 200, _error(state.terminal_errors.pop(0), "refused by failure injection")
            grant = params.get("grant_type")
            if grant == "refresh_token":
                token = params.get("refresh_token", "")
                if token not in state.valid_refresh_tokens:
                    state.counts["refused_refreshes"] += 1
                    return 200, _error("ACCESS_DENIED", "refresh token is invalid or already used")
                state.valid_refresh_tokens.discard(token)
                state.counts["refreshes"] += 1
            elif grant == "authorization_code":
                expiry = state.codes.pop(params.get("code", ""), None)
                if expiry is None or expiry < time.monotonic() or not params.get("redirect_uri"):
                    return 200, _error("ACCESS_DENIED", "authorization code is invalid, expired or used")
                state.counts["codes_exchanged"] += 1
            else:
                return 400, _error("INVALID_REQUEST", f"unsupported grant_type {grant!r}")
            access, refresh = self._issue_locked()
            if state.snake_case:
                body: dict[str, object] = {
                    "access_token": access,
                    "refresh_token": refresh,
                    "expires_in": state.expires_in,
                    "token_type": "bearer",
                }
            else:
                body = {
                    "accessToken": access,
                    "refreshToken": refresh,
                    "expiresIn": state.expires_in,
                    "tokenType": "bearer",
                    "errorCode": None,
                    "description": None,
                }
            return 200, body

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                self._dispatch("GET", url.path, _flat(parse_qs(url.query)))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8")
                self._dispatch("POST", urlsplit(self.path).path, _flat(parse_qs(body)))

            def _dispatch(self, method: str, path: str, params: dict[str, str]) -> None:
                if path != "/apps/token":
                    self._send(404, {"description": "not found"})
                    return
                self._send(*server._answer(method, params))

            def _send(self, status: int, body: dict[str, object]) -> None:
                payload = json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                """Silent: the request line carries tokens in its query string."""

        return Handler


def _error(code: str, description: str) -> dict[str, object]:
    return {
        "accessToken": None,
        "refreshToken": None,
        "expiresIn": None,
        "errorCode": code,
        "description": description,
    }


def _flat(query: dict[str, list[str]]) -> dict[str, str]:
    return {key: values[-1] for key, values in query.items()}
