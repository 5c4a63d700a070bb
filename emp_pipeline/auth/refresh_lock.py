"""A Redis lock that serialises refreshes across threads and processes.

Refresh tokens are single-use, so two refreshers racing would both send the same token and one would get
refused. `SET key owner NX PX ttl` takes the lock; a Lua compare-and-delete releases it only if we still own
it (after a TTL expiry someone else may). The TTL must outlast a whole refresh (HTTP timeout x attempts plus
backoff), so a crashed holder blocks others for at most one TTL.
"""

from __future__ import annotations

import logging
import time
import uuid
from types import TracebackType

import redis

from emp_pipeline.auth.errors import TokenLockTimeoutError, TokenStoreUnavailableError
from emp_pipeline.auth.redis_connection import translate_redis_errors

logger = logging.getLogger(__name__)

_RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisRefreshLock:
    """One acquisition of the refresh lock; use it as a context manager. Not reentrant."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        ttl_s: float,
        wait_timeout_s: float,
        poll_interval_s: float = 0.05,
    ) -> None:
        self._redis = client
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.wait_timeout_s = wait_timeout_s
        self.poll_interval_s = poll_interval_s
        self.owner = uuid.uuid4().hex
        self._release_script = client.register_script(_RELEASE_IF_OWNER)
        self._acquired_at: float | None = None

    def acquire(self) -> None:
        """Poll until the lock is ours or the wait timeout passes (then raise: another refresh is stuck)."""
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            attempted_at = time.monotonic()
            with translate_redis_errors(self._redis):
                if self._redis.set(self.key, self.owner, nx=True, px=self.ttl_ms):
                    self._acquired_at = attempted_at  # the lease started no later than the SET was sent
                    return
            if time.monotonic() >= deadline:
                raise TokenLockTimeoutError(
                    f"waited {self.wait_timeout_s:.1f}s for the token refresh lock {self.key}: another "
                    f"refresh holds it; it expires within {self.ttl_ms / 1000:.0f}s if its holder died"
                )
            time.sleep(self.poll_interval_s)

    def lease_remaining_s(self) -> float:
        """Seconds until the lock expires by itself, counted from when it was taken (0 if it is not held)."""
        if self._acquired_at is None:
            return 0.0
        return max(0.0, self._acquired_at + self.ttl_ms / 1000 - time.monotonic())

    def release(self) -> bool:
        """Delete the lock if we still own it; False means it expired and may belong to someone else now."""
        with translate_redis_errors(self._redis):
            return bool(self._release_script(keys=[self.key], args=[self.owner]))

    def __enter__(self) -> RedisRefreshLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            released = self.release()
        except TokenStoreUnavailableError as release_error:
            if exc is None:
                raise
            # The error that ended the block says more (often the same outage); the lock expires by itself.
            logger.warning("could not release the refresh lock %s: %s", self.key, release_error)
            return
        finally:
            self._acquired_at = None
        if not released:
            logger.warning(
                "the refresh lock %s expired before its holder finished (TTL %d ms): raise the TTL above the "
                "longest refresh",
                self.key,
                self.ttl_ms,
            )
