"""What the cTrader token tests share: the Redis and client constants and a token manager wired to them.

The `key_prefix` and `token_server` fixtures built on these live in this directory's conftest.py.
"""

from __future__ import annotations

from emp_pipeline.auth.oauth_client import CTraderOAuthClient, HttpMethod
from emp_pipeline.auth.redis_connection import connect_redis
from emp_pipeline.auth.token_manager import CTraderTokenManager, RetrySchedule
from emp_pipeline.auth.token_store import RedisTokenStore, TokenCipher

REDIS_URL = "redis://127.0.0.1:6379/0"
CLIENT_ID, CLIENT_SECRET = "test-client", "test-client-secret-value"
REDIRECT_URI = "http://127.0.0.1/callback"


def make_manager(
    base_url: str,
    key_prefix: str,
    *,
    margin_s: float = 3600.0,
    attempts: int = 3,
    timeout_s: float = 3.0,
    token_key: str | None = None,
    method: HttpMethod = "GET",
    lock_ttl_s: float | None = None,
    store_class: type[RedisTokenStore] = RedisTokenStore,
    redis_url: str = REDIS_URL,
) -> CTraderTokenManager:
    """A manager on the test Redis (or a proxy to it) under `key_prefix`, talking to the token server at
    `base_url`."""
    cipher = TokenCipher(token_key) if token_key else None
    store = store_class(connect_redis(redis_url), CLIENT_ID, key_prefix=key_prefix, cipher=cipher)
    oauth = CTraderOAuthClient(
        CLIENT_ID, CLIENT_SECRET, base_url=base_url, timeout_s=timeout_s, method=method
    )
    return CTraderTokenManager(
        store,
        oauth,
        refresh_margin_s=margin_s,
        retry=RetrySchedule(max_attempts=attempts, base_delay_s=0.01, max_delay_s=0.05),
        lock_ttl_s=lock_ttl_s,
    )
