"""Alerts when a live run fails: always a log line, plus a JSON POST to a webhook when one is configured.

A failed live run means orders may be in an unknown state, so a person must look; the webhook (Slack,
Teams, Alertmanager, ...) is how they hear of it. Sending is best effort: an unreachable webhook is logged,
never raised, since the failure sensor must keep watching the next runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT_S = 5.0


def _redacted(url: str) -> str:
    """Scheme and host only: webhook paths often embed the secret token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/..."


def send_alert(title: str, details: Mapping[str, str], webhook_url: str | None) -> bool:
    """Log the alert; POST it as JSON (`text`, `title`, `details`) if a webhook is set; True if delivered."""
    text = f"{title}: " + "; ".join(f"{key}={value}" for key, value in details.items())
    log.error("ALERT %s", text)
    if not webhook_url:
        return False
    try:
        response = requests.post(
            webhook_url,
            json={"text": text, "title": title, "details": dict(details)},
            timeout=WEBHOOK_TIMEOUT_S,
        )
        response.raise_for_status()
    except requests.RequestException as exc:
        log.error("alert webhook %s failed: %s", _redacted(webhook_url), type(exc).__name__)
        return False
    return True
