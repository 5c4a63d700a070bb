"""The cTrader OAuth token resource: the token kept fresh in Redis (emp_pipeline/auth)."""

from __future__ import annotations

from dagster import ConfigurableResource

from emp_pipeline.auth.build import build_token_manager, build_token_store
from emp_pipeline.auth.oauth_client import token_request_method
from emp_pipeline.auth.token_manager import CTraderTokenManager, RetrySchedule
from emp_pipeline.auth.token_store import TokenState


class CTraderTokenResource(ConfigurableResource):
    """The cTrader OAuth token kept fresh in Redis; secrets (client id/secret, token key) come as EnvVar."""

    client_id: str
    client_secret: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    token_url: str = "https://openapi.ctrader.com"
    key_prefix: str = "emp:"
    token_key: str | None = None
    refresh_margin_seconds: float = 3600.0
    http_timeout_seconds: float = 10.0
    max_attempts: int = 4
    retry_base_delay_seconds: float = 1.0
    request_method: str = "GET"  # CTRADER_TOKEN_REQUEST_METHOD: GET (as the official SDKs) or POST
    sensor_socket_timeout_seconds: float = 2.0

    def manager(self) -> CTraderTokenManager:
        """A token manager for this process (the lock in Redis makes several of them safe together)."""
        return build_token_manager(
            client_id=self.client_id,
            client_secret=self.client_secret,
            redis_url=self.redis_url,
            token_url=self.token_url,
            key_prefix=self.key_prefix,
            token_key=self.token_key,
            refresh_margin_s=self.refresh_margin_seconds,
            http_timeout_s=self.http_timeout_seconds,
            retry=RetrySchedule(max_attempts=self.max_attempts, base_delay_s=self.retry_base_delay_seconds),
            method=token_request_method(self.request_method),
        )

    def get_access_token(self) -> str:
        return self.manager().get_access_token()

    def read_state(self) -> TokenState | None:
        """Expiry, version and status only, over a connection with short timeouts: all a sensor may afford."""
        store = build_token_store(
            client_id=self.client_id,
            redis_url=self.redis_url,
            key_prefix=self.key_prefix,
            token_key=None,
            socket_timeout_s=self.sensor_socket_timeout_seconds,
        )
        return store.read_state()
