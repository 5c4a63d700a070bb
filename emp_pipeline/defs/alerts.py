"""The alert resource the failure sensors share: a log line always, plus the webhook when one is set."""

from __future__ import annotations

from collections.abc import Mapping

from dagster import ConfigurableResource

from emp_pipeline.live.alerts import send_alert


class AlertWebhookResource(ConfigurableResource):
    """Where alerts go; the URL (it may embed a token) arrives as EnvVar("EMP_ALERT_WEBHOOK_URL") or None."""

    webhook_url: str | None = None

    def send(self, title: str, details: Mapping[str, str]) -> bool:
        return send_alert(title, details, self.webhook_url)
