"""Assemble a token store and manager from plain configuration, shared by the Dagster resource and the CLI."""

from __future__ import annotations

from emp_pipeline.auth.oauth_client import CTraderOAuthClient, HttpMethod
from emp_pipeline.auth.redis_connection import connect_redis
from emp_pipeline.auth.token_manager import CTraderTokenManager, RetrySchedule
from emp_pipeline.auth.token_store import RedisTokenStore, TokenCipher


def build_token_store(
    *, client_id: str, redis_url: str, key_prefix: str, token_key: str | None, socket_timeout_s: float = 5.0
) -> RedisTokenStore:
    """A store for one client id; encrypted at rest when `token_key` (EMP_TOKEN_KEY) is given."""
    cipher = TokenCipher(token_key) if token_key else None
    client = connect_redis(redis_url, socket_timeout_s=socket_timeout_s)
    return RedisTokenStore(client, client_id, key_prefix=key_prefix, cipher=cipher)


def build_token_manager(
    *,
    client_id: str,
    client_secret: str,
    redis_url: str,
    token_url: str,
    key_prefix: str,
    token_key: str | None,
    refresh_margin_s: float,
    http_timeout_s: float = 10.0,
    retry: RetrySchedule | None = None,
    method: HttpMethod = "GET",
) -> CTraderTokenManager:
    store = build_token_store(
        client_id=client_id, redis_url=redis_url, key_prefix=key_prefix, token_key=token_key
    )
    oauth = CTraderOAuthClient(
        client_id, client_secret, base_url=token_url, timeout_s=http_timeout_s, method=method
    )
    return CTraderTokenManager(store, oauth, refresh_margin_s=refresh_margin_s, retry=retry)
