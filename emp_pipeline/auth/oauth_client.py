"""The cTrader OAuth token endpoint: authorization-code and refresh-token grants.

One URL serves both grants. The official SDKs send GET with the parameters in the query string (the
default here, CTRADER_TOKEN_REQUEST_METHOD=GET); POST with a form body keeps the secrets out of URLs and
access logs, for a venue known to accept it. A server that refuses the method (HTTP 405) gets a
configuration error, never a token marked for re-authorisation. The URL must be https:// except on
loopback. Answers are camelCase with a snake_case fallback. cTrader reports refusals with HTTP 200 and a
non-null `errorCode`, so the body decides, not only the status. This module makes exactly one HTTP request
per call: retrying is the token manager's job, because only it knows whether a retry is safe for a
single-use refresh token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import requests
import urllib3

from emp_pipeline.auth.errors import TerminalTokenError, TokenRequestMethodError, TransientTokenError
from emp_pipeline.auth.redaction import install_http_log_redaction, redact_secrets
from emp_pipeline.endpoint_security import require_tls_off_loopback

DEFAULT_BASE_URL = "https://openapi.ctrader.com"
TOKEN_PATH = "/apps/token"
AUTH_PATH = "/apps/auth"
TRANSIENT_STATUSES = frozenset({429})
METHOD_NOT_ALLOWED = 405

HttpMethod = Literal["GET", "POST"]


def token_request_method(configured: str) -> HttpMethod:
    """GET or POST, whatever the case; anything else is refused by name rather than sent as GET."""
    method = configured.upper()
    if method == "GET" or method == "POST":
        return method
    raise ValueError(f"CTRADER_TOKEN_REQUEST_METHOD must be GET or POST, not {configured!r}")


@dataclass(frozen=True)
class TokenGrant:
    """A token pair as the endpoint issued it; `expires_in` is seconds from the answer."""

    access_token: str
    refresh_token: str
    expires_in: float
    token_type: str

    def __repr__(self) -> str:
        return f"TokenGrant(access_token=<redacted>, refresh_token=<redacted>, expires_in={self.expires_in})"


def _field(body: dict[str, Any], camel: str, snake: str) -> Any:
    value = body.get(camel)
    return body.get(snake) if value is None else value


def parse_token_response(status_code: int, body: Any, method: HttpMethod = "GET") -> TokenGrant:
    """Turn one endpoint answer into a grant, or raise the error class that says whether to retry."""
    if status_code == METHOD_NOT_ALLOWED:
        other = "POST" if method == "GET" else "GET"
        raise TokenRequestMethodError(
            f"the token endpoint does not accept {method} requests (HTTP 405): set "
            f"CTRADER_TOKEN_REQUEST_METHOD={other}. The refresh token was not spent."
        )
    if status_code >= 500 or status_code in TRANSIENT_STATUSES:
        raise TransientTokenError(
            f"token endpoint answered HTTP {status_code}; retry later", request_may_have_been_processed=False
        )
    if not isinstance(body, dict):
        if status_code >= 400:
            raise TerminalTokenError(f"token endpoint refused the grant with HTTP {status_code}")
        raise TransientTokenError(
            f"token endpoint answered HTTP {status_code} with a body that is not a JSON object",
            request_may_have_been_processed=True,
        )
    error_code = _field(body, "errorCode", "error_code") or body.get("error")
    if error_code is not None or status_code >= 400:
        description = _field(body, "description", "error_description") or "no description"
        raise TerminalTokenError(
            f"token endpoint refused the grant: HTTP {status_code}, errorCode={error_code!s}, "
            f"description={redact_secrets(str(description))!r}",
            error_code=None if error_code is None else str(error_code),
        )
    access_token = _field(body, "accessToken", "access_token")
    refresh_token = _field(body, "refreshToken", "refresh_token")
    expires_in = _field(body, "expiresIn", "expires_in")
    if not access_token or not refresh_token or expires_in is None:
        missing = [
            name
            for name, value in (
                ("accessToken", access_token),
                ("refreshToken", refresh_token),
                ("expiresIn", expires_in),
            )
            if not value and value != 0
        ]
        raise TerminalTokenError(
            f"token endpoint answered without {', '.join(missing)} and without errorCode"
        )
    return TokenGrant(
        access_token=str(access_token),
        refresh_token=str(refresh_token),
        expires_in=float(expires_in),
        token_type=str(_field(body, "tokenType", "token_type") or "bearer"),
    )


class CTraderOAuthClient:
    """Sends the two grants to `<base_url>/apps/token` with a per-request timeout."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 10.0,
        method: HttpMethod = "GET",
        session: requests.Session | None = None,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError(
                "cTrader client id and secret are both required: set CTRADER_CLIENT_ID and "
                "CTRADER_CLIENT_SECRET"
            )
        self.client_id = client_id
        self._client_secret = client_secret
        self.base_url = require_tls_off_loopback(
            base_url.rstrip("/"), variable="CTRADER_TOKEN_URL", tls_scheme="https", plain_scheme="http"
        )
        self.timeout_s = timeout_s
        self.method: HttpMethod = token_request_method(method)
        self._session = session or requests.Session()
        install_http_log_redaction()

    @property
    def token_url(self) -> str:
        return f"{self.base_url}{TOKEN_PATH}"

    def authorization_url(self, redirect_uri: str, scope: str = "trading") -> str:
        """The consent page a person opens to grant access; it redirects to `redirect_uri?code=...`."""
        query = urlencode({"client_id": self.client_id, "redirect_uri": redirect_uri, "scope": scope})
        return f"{self.base_url}{AUTH_PATH}?{query}"

    def exchange_code(self, code: str, redirect_uri: str) -> TokenGrant:
        """Authorization-code grant (a code lives about one minute)."""
        return self._request({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri})

    def refresh(self, refresh_token: str) -> TokenGrant:
        """Refresh-token grant: the answer carries a new pair and the old refresh token stops working."""
        return self._request({"grant_type": "refresh_token", "refresh_token": refresh_token})

    def _request(self, grant: dict[str, str]) -> TokenGrant:
        parameters = {**grant, "client_id": self.client_id, "client_secret": self._client_secret}
        timeouts = (self.timeout_s, self.timeout_s)  # connect, then read: an attempt lasts at most twice this
        try:
            if self.method == "GET":
                response = self._session.get(self.token_url, params=parameters, timeout=timeouts)
            else:
                response = self._session.post(self.token_url, data=parameters, timeout=timeouts)
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            raise ValueError(
                f"the token endpoint URL {self.token_url!r} is not valid: fix CTRADER_TOKEN_URL "
                f"({redact_secrets(str(exc))})"
            ) from None
        except requests.ConnectTimeout as exc:
            raise TransientTokenError(
                f"could not connect to the token endpoint {self.token_url}: {redact_secrets(str(exc))}",
                request_may_have_been_processed=False,
            ) from None
        except requests.RequestException as exc:
            # A read timeout or a reset may come after the server rotated the token: the outcome is unknown.
            raise TransientTokenError(
                f"no answer from the token endpoint {self.token_url}: {type(exc).__name__}: "
                f"{redact_secrets(str(exc))}",
                request_may_have_been_processed=not isinstance(exc, requests.ConnectionError)
                or _may_have_been_sent(exc),
            ) from None
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        return parse_token_response(response.status_code, body, self.method)


def _may_have_been_sent(exc: requests.RequestException) -> bool:
    """Only a connection that was never established (refused, unresolvable) proves nothing was sent."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, urllib3.exceptions.NewConnectionError)
