"""Keeps one cTrader access token valid: refresh early, once, under a lock, and never lose the new pair.

The refresh protocol, in order:
1. take the Redis refresh lock (shared by every thread and process), then re-read the store: another holder
   may have refreshed while we waited, in which case its pair is returned and no request is sent;
2. write the in-flight marker (fingerprint of the refresh token about to be spent) before the HTTP call;
3. call the token endpoint, retrying transient failures with exponential backoff;
4. write the new pair, its expiry and version+1 in one MULTI/EXEC, clearing the marker; only then return it.
   If Redis is unreachable at that moment (a restart, a network blip), the new pair is kept in memory and
   the write retried with backoff for as long as the lock's lease allows (the lease includes a budget for
   this); only if Redis stays away longer is the pair lost, and the error says exactly that.

What cannot be recovered: if the process dies (or Redis stays down past the lease) after the server rotated
the token but before step 4, the only valid refresh token is gone. The marker makes this visible: the next
attempt finds a marker for the same refresh token, tries it once more (it still works if the first request
never reached the server), and if the server refuses it, sets `reauth_required` with a message naming the
interrupted attempt instead of retrying in a loop. A person must then run `emp token authorize`.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from emp_pipeline.auth.errors import (
    REAUTHORIZE_HINT,
    ReauthRequiredError,
    RotatedPairLostError,
    TerminalTokenError,
    TokenNotAuthorizedError,
    TokenRequestMethodError,
    TokenStoreUnavailableError,
    TransientTokenError,
)
from emp_pipeline.auth.oauth_client import CTraderOAuthClient, TokenGrant
from emp_pipeline.auth.redaction import fingerprint
from emp_pipeline.auth.refresh_lock import RedisRefreshLock
from emp_pipeline.auth.token_store import RedisTokenStore, StoredToken, TokenState, TokenStatus

logger = logging.getLogger(__name__)

DEFAULT_REFRESH_MARGIN_S = 3600.0
# Part of the lock's lease reserved for storing a rotated pair while Redis is briefly unreachable.
STORE_RETRY_BUDGET_S = 30.0
STORE_RETRY_FIRST_DELAY_S = 0.25
STORE_RETRY_MAX_DELAY_S = 2.0


@dataclass(frozen=True)
class RetrySchedule:
    """Exponential backoff with jitter for transient token-endpoint failures."""

    max_attempts: int = 4
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt` (2, 3, ...): base x 2^(n-2), jittered to 50-100%."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 2)) * random.uniform(0.5, 1.0)

    def worst_case_s(self, request_timeout_s: float) -> float:
        """The longest a full refresh can take: every attempt timing out on connect and on read, plus every
        backoff at its maximum."""
        backoff = sum(
            min(self.max_delay_s, self.base_delay_s * 2 ** (n - 2)) for n in range(2, self.max_attempts + 1)
        )
        return self.max_attempts * 2 * request_timeout_s + backoff


@dataclass(frozen=True)
class TokenHealth:
    """What an operator or a sensor needs to know, without any token value."""

    status: TokenStatus
    version: int
    expires_at: float
    seconds_to_expiry: float
    needs_refresh: bool
    last_refresh_at: float | None
    consecutive_failures: int
    last_error: str
    refresh_in_flight: bool


@dataclass(frozen=True)
class RefreshOutcome:
    token: StoredToken
    refreshed: bool


def _iso(epoch: float | None) -> str:
    return "never" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _valid_state(version: int, expires_at: float, refreshed_at: float) -> TokenState:
    """The state `RedisTokenStore.write_pair` leaves behind, without reading it back."""
    return TokenState(
        expires_at=expires_at,
        version=version,
        status=TokenStatus.VALID,
        last_refresh_at=refreshed_at,
        consecutive_failures=0,
        last_error="",
        inflight_fingerprint=None,
        inflight_started_at=None,
        inflight_owner=None,
    )


class CTraderTokenManager:
    """`get_access_token()` for callers, `refresh_if_needed()` for the refresh job, `health()` for people."""

    def __init__(
        self,
        store: RedisTokenStore,
        oauth: CTraderOAuthClient,
        *,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
        retry: RetrySchedule | None = None,
        lock_ttl_s: float | None = None,
        lock_wait_timeout_s: float | None = None,
    ) -> None:
        self._store = store
        self._oauth = oauth
        self.refresh_margin_s = refresh_margin_s
        self.retry = retry or RetrySchedule()
        # The lock must outlive the longest refresh plus the time to store its answer through a short Redis
        # outage, or a slow holder could lose it mid-refresh.
        worst_case_refresh_s = self.retry.worst_case_s(oauth.timeout_s)
        self.lock_ttl_s = (
            lock_ttl_s if lock_ttl_s is not None else worst_case_refresh_s + STORE_RETRY_BUDGET_S + 5.0
        )
        # Waiters outlast one full TTL, so a holder that crashed cannot make them give up early.
        self.lock_wait_timeout_s = (
            lock_wait_timeout_s if lock_wait_timeout_s is not None else self.lock_ttl_s + 5.0
        )

    def needs_refresh(self, state: TokenState, now: float | None = None) -> bool:
        """Inside the margin, or an earlier refresh left its marker: its outcome must be settled first,
        because the server may already have rotated (and invalidated) the stored pair."""
        inside_margin = state.seconds_to_expiry(time.time() if now is None else now) < self.refresh_margin_s
        return inside_margin or state.inflight_fingerprint is not None

    def get_access_token(self) -> str:
        """A valid access token, refreshed first if less than the margin is left."""
        stored = self._read_usable()
        if not self.needs_refresh(stored.state):
            return stored.access_token
        return self.refresh_if_needed().token.access_token

    def refresh_if_needed(self) -> RefreshOutcome:
        """Refresh under the lock, unless the store re-read under it shows the pair is out of the margin."""
        with self._store.refresh_lock(ttl_s=self.lock_ttl_s, wait_timeout_s=self.lock_wait_timeout_s) as lock:
            stored = self._read_usable()
            if not self.needs_refresh(stored.state):
                logger.debug(
                    "token version %d was refreshed by another holder of the lock", stored.state.version
                )
                return RefreshOutcome(stored, refreshed=False)
            return RefreshOutcome(self._refresh_locked(stored, lock), refreshed=True)

    def force_refresh(self, rejected_access_token: str) -> str:
        """Refresh now, whatever the expiry says: the broker was told `rejected_access_token` is invalid.

        Under the lock the store is re-read first: if its access token is no longer the rejected one,
        another holder already refreshed (or several callers saw the same rejection) and that newer token is
        returned without spending the refresh token again. One invalidation costs one refresh.
        """
        with self._store.refresh_lock(ttl_s=self.lock_ttl_s, wait_timeout_s=self.lock_wait_timeout_s) as lock:
            stored = self._read_usable()
            if stored.access_token != rejected_access_token:
                logger.debug("token version %d already replaced the rejected one", stored.state.version)
                return stored.access_token
            return self._refresh_locked(stored, lock).access_token

    def authorization_url(self, redirect_uri: str, scope: str = "trading") -> str:
        return self._oauth.authorization_url(redirect_uri, scope)

    def authorize_with_code(self, code: str, redirect_uri: str) -> TokenState:
        """Exchange a consent code for a pair and store it (replacing any stored pair, even a refused one)."""
        with self._store.refresh_lock(ttl_s=self.lock_ttl_s, wait_timeout_s=self.lock_wait_timeout_s):
            return self._store_grant(self._oauth.exchange_code(code, redirect_uri))

    def authorize_with_refresh_token(self, refresh_token: str) -> TokenState:
        """Adopt a refresh token issued elsewhere (CTRADER_REFRESH_TOKEN of the old system) by spending it."""
        with self._store.refresh_lock(ttl_s=self.lock_ttl_s, wait_timeout_s=self.lock_wait_timeout_s):
            return self._store_grant(self._oauth.refresh(refresh_token))

    def health(self) -> TokenHealth | None:
        """Reads only the non-secret fields; None when nothing is stored."""
        state = self._store.read_state()
        if state is None:
            return None
        now = time.time()
        return TokenHealth(
            status=state.status,
            version=state.version,
            expires_at=state.expires_at,
            seconds_to_expiry=state.seconds_to_expiry(now),
            needs_refresh=self.needs_refresh(state, now),
            last_refresh_at=state.last_refresh_at,
            consecutive_failures=state.consecutive_failures,
            last_error=state.last_error,
            refresh_in_flight=state.inflight_fingerprint is not None,
        )

    def _read_usable(self) -> StoredToken:
        stored = self._store.read()
        if stored is None:
            raise TokenNotAuthorizedError(
                f"no cTrader token is stored for client {self._store.client_id} ({self._store.key}). "
                + REAUTHORIZE_HINT
            )
        if stored.state.status is TokenStatus.REAUTH_REQUIRED:
            raise ReauthRequiredError(
                f"the cTrader token for client {self._store.client_id} needs re-authorisation: "
                f"{stored.state.last_error or 'no reason recorded'}"
            )
        return stored

    def _store_grant(self, grant: TokenGrant) -> TokenState:
        now = time.time()
        version = self._store.write_pair(grant.access_token, grant.refresh_token, now + grant.expires_in, now)
        logger.info(
            "stored cTrader token pair version %d (refresh token %s), expires %s",
            version,
            fingerprint(grant.refresh_token),
            _iso(now + grant.expires_in),
        )
        return _valid_state(version, now + grant.expires_in, now)

    def _refresh_locked(self, stored: StoredToken, lock: RedisRefreshLock) -> StoredToken:
        old_fingerprint = fingerprint(stored.refresh_token)
        state = stored.state
        interrupted = state.inflight_fingerprint == old_fingerprint
        if interrupted:
            logger.warning(
                "an earlier refresh of refresh token %s (started %s by %s) never stored its answer; "
                "trying the stored refresh token once more",
                old_fingerprint,
                _iso(state.inflight_started_at),
                state.inflight_owner,
            )
        owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self._store.mark_refresh_in_flight(old_fingerprint, owner, time.time())
        answer_may_be_lost = interrupted
        for attempt in range(1, self.retry.max_attempts + 1):
            if attempt > 1:
                time.sleep(self.retry.delay_before(attempt))
            try:
                grant = self._oauth.refresh(stored.refresh_token)
            except TransientTokenError as exc:
                answer_may_be_lost = answer_may_be_lost or exc.request_may_have_been_processed
                logger.warning(
                    "token refresh attempt %d/%d failed (transient): %s",
                    attempt,
                    self.retry.max_attempts,
                    exc,
                )
                if attempt == self.retry.max_attempts:
                    self._store.record_failure(
                        f"{self.retry.max_attempts} refresh attempts failed, last: {exc}",
                        reauth_required=False,
                        keep_in_flight=answer_may_be_lost,
                    )
                    raise
                continue
            except TokenRequestMethodError as exc:
                # The server refused the request itself: the refresh token is unspent and still stored.
                self._store.record_failure(str(exc), reauth_required=False, keep_in_flight=answer_may_be_lost)
                raise
            except TerminalTokenError as exc:
                message = self._terminal_message(exc, state, old_fingerprint, answer_may_be_lost, interrupted)
                self._store.record_failure(message, reauth_required=True, keep_in_flight=False)
                logger.error("%s", message)
                raise ReauthRequiredError(message) from None
            break
        now = time.time()
        expires_at = now + grant.expires_in
        version = self._store_rotated_pair(grant, expires_at, now, old_fingerprint, lock)
        logger.info(
            "refreshed cTrader token: version %d, refresh token %s -> %s, expires %s",
            version,
            old_fingerprint,
            fingerprint(grant.refresh_token),
            _iso(expires_at),
        )
        return StoredToken(grant.access_token, grant.refresh_token, _valid_state(version, expires_at, now))

    def _store_rotated_pair(
        self,
        grant: TokenGrant,
        expires_at: float,
        refreshed_at: float,
        old_fingerprint: str,
        lock: RedisRefreshLock,
    ) -> int:
        """Write the new pair, retrying through a Redis outage while the lock's lease lasts.

        The old refresh token is spent: this pair, held only in memory here, is the account's only way in.
        A write is attempted only while the lease outlasts its worst case (timeouts and redis-py's own
        retries), so no other process can take the lock and act on the stale store meanwhile.
        """
        attempts, delay = 0, STORE_RETRY_FIRST_DELAY_S
        first_failure_at: float | None = None
        while True:
            attempts += 1
            try:
                return self._store.write_pair(
                    grant.access_token, grant.refresh_token, expires_at, refreshed_at
                )
            except TokenStoreUnavailableError as exc:
                now = time.monotonic()
                first_failure_at = first_failure_at if first_failure_at is not None else now
                if lock.lease_remaining_s() < delay + self._store.command_worst_case_s + 1.0:
                    message = (
                        f"cTrader rotated refresh token {old_fingerprint} and answered with a new pair "
                        f"(refresh token {fingerprint(grant.refresh_token)}), but the token store "
                        f"({self._store.location}) stayed unreachable for {now - first_failure_at:.0f} s: "
                        f"{attempts} attempts to store the pair failed before the refresh lock's lease ran "
                        f"out, so the new pair, held only by this process, is lost. Last error: {exc}. The "
                        f"stored refresh token {old_fingerprint} is spent: the next refresh will be refused "
                        "and mark the token reauth_required. " + REAUTHORIZE_HINT
                    )
                    logger.error("%s", message)
                    raise RotatedPairLostError(message) from None
                logger.warning(
                    "storing the rotated cTrader pair (refresh token %s) failed, attempt %d; the pair is "
                    "kept in memory and the write retried in %.2f s (%.0f s of lock lease left): %s",
                    fingerprint(grant.refresh_token),
                    attempts,
                    delay,
                    lock.lease_remaining_s(),
                    exc,
                )
                time.sleep(delay)
                delay = min(STORE_RETRY_MAX_DELAY_S, delay * 2)

    @staticmethod
    def _terminal_message(
        exc: TerminalTokenError,
        state: TokenState,
        old_fingerprint: str,
        answer_may_be_lost: bool,
        interrupted: bool,
    ) -> str:
        if interrupted:
            return (
                f"cTrader refused refresh token {old_fingerprint} ({exc}) after an earlier refresh with it "
                f"(started {_iso(state.inflight_started_at)} by {state.inflight_owner}) never stored its "
                "answer: the server most likely rotated the token and the new pair was lost when that "
                "process died or lost Redis between the answer and the store write. It cannot be recovered. "
                + REAUTHORIZE_HINT
            )
        if answer_may_be_lost:
            return (
                f"cTrader refused refresh token {old_fingerprint} ({exc}) after an earlier attempt got no "
                "answer (timeout or reset): the server most likely rotated the token and its answer was "
                "lost. It cannot be recovered. " + REAUTHORIZE_HINT
            )
        return f"cTrader refused refresh token {old_fingerprint} ({exc}). " + REAUTHORIZE_HINT
