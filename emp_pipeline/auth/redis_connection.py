"""Redis clients for the token store, and the one translation of "Redis is down" into an actionable error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from emp_pipeline.auth.errors import TokenStoreUnavailableError

# redis-py's own retries of one command on a connection error, kept few and short so that the token code,
# which knows what a retry may cost (a lock lease, a sensor tick), decides how long to keep trying.
COMMAND_RETRIES = 2
COMMAND_RETRY_CAP_S = 0.5


def connect_redis(url: str, *, socket_timeout_s: float = 5.0) -> redis.Redis:
    """A client with bounded connect and read timeouts and retries, so nothing waits long on a dead server."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=socket_timeout_s,
        socket_timeout=socket_timeout_s,
        decode_responses=True,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=COMMAND_RETRY_CAP_S), COMMAND_RETRIES),
    )


def command_worst_case_s(client: redis.Redis) -> float:
    """The longest one command of `client` can take to fail: every try timing out, plus the backoffs."""
    kwargs = client.connection_pool.connection_kwargs
    timeout = max(float(kwargs.get("socket_timeout") or 0), float(kwargs.get("socket_connect_timeout") or 0))
    return (COMMAND_RETRIES + 1) * (timeout or 5.0) + COMMAND_RETRIES * COMMAND_RETRY_CAP_S


@contextmanager
def translate_redis_errors(client: redis.Redis) -> Iterator[None]:
    """Turn connection failures and timeouts into `TokenStoreUnavailableError` naming the server."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise TokenStoreUnavailableError(
            f"the token store (Redis at {describe_client(client)}) is unavailable: "
            f"{type(exc).__name__}: {exc}. Start Redis (e.g. `redis-server --daemonize yes --bind 127.0.0.1 "
            "--port 6379`) or point REDIS_URL at a reachable server."
        ) from None


def describe_client(client: redis.Redis) -> str:
    """redis://host:port/db of a client, never with its password."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    scheme = "rediss" if client.connection_pool.connection_class.__name__ == "SSLConnection" else "redis"
    return f"{scheme}://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
