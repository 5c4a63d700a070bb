"""Where secrets may travel: over TLS, except to this machine's loopback.

The token endpoint receives the client secret and the tokens, the Open API the access token. A plain
`http://` or `ws://` URL would send them readable to every hop, so such a URL is refused unless its host is
loopback (127.0.0.0/8, ::1, localhost), where the tests' local servers run and nothing leaves the machine.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})


class InsecureEndpointError(ValueError):
    """A URL that would carry secrets without TLS to another machine, or with an unknown scheme."""


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shown(url: str) -> str:
    """The URL without any user:password part, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def require_tls_off_loopback(url: str, *, variable: str, tls_scheme: str, plain_scheme: str) -> str:
    """`url` if it uses `tls_scheme`, or `plain_scheme` on loopback; otherwise an error naming `variable`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == tls_scheme:
        return url
    if scheme == plain_scheme:
        if is_loopback(parts.hostname):
            return url
        raise InsecureEndpointError(
            f"{variable}={_shown(url)} would send secrets unencrypted to {parts.hostname}: use "
            f"{tls_scheme}:// ({plain_scheme}:// is accepted only on loopback, for local test servers)"
        )
    raise InsecureEndpointError(f"{variable}={_shown(url)} must be a {tls_scheme}:// URL")
