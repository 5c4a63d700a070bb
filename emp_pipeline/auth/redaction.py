"""Keep token values out of logs and error messages.

The official cTrader SDKs send the token grants as GET with every secret in the query string, and urllib3
logs request lines (path and query) at DEBUG while requests puts the URL into its connection-error
messages. Everything that could carry such a URL goes through `redact_secrets` first, and a filter on the
urllib3 loggers rewrites their records before any handler sees them.
"""

from __future__ import annotations

import hashlib
import logging
import re

_SECRET_PARAMETER = re.compile(
    r"(?i)\b(access_?token|refresh_?token|code|client_?secret)=([^&\s\"'<>]+)",
)
_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3")


def redact_secrets(text: str) -> str:
    """Replace the value of every secret query/form parameter in `text` with `<redacted>`."""
    return _SECRET_PARAMETER.sub(lambda match: f"{match.group(1)}=<redacted>", text)


def fingerprint(token: str) -> str:
    """A short, non-reversible tag of a token, so logs and markers can name it without holding it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]


class SecretRedactingFilter(logging.Filter):
    """Rewrites a record's rendered message with secret parameters redacted (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_FILTER = SecretRedactingFilter()


def install_http_log_redaction() -> None:
    """Attach the redacting filter to urllib3's loggers (idempotent: a filter is attached once)."""
    for name in _URLLIB3_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
