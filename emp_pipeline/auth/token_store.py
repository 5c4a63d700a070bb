"""The token pair and its health in one Redis hash per client id, written atomically.

Hash `<prefix>token:<client_id>` fields: access_token, refresh_token (Fernet-encrypted when a key is set),
expires_at (epoch seconds), version (incremented on every new pair), status (valid / refreshing /
reauth_required), last_refresh_at, consecutive_failures, last_error (never a token), and the refresh
in-flight marker (inflight_fingerprint, inflight_started_at, inflight_owner) that lets the next attempt
tell a refused token from an answer lost in a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import redis
from cryptography.fernet import Fernet, InvalidToken

from emp_pipeline.auth.errors import TokenKeyError
from emp_pipeline.auth.redaction import redact_secrets
from emp_pipeline.auth.redis_connection import command_worst_case_s, describe_client, translate_redis_errors
from emp_pipeline.auth.refresh_lock import RedisRefreshLock

ENCRYPTED_PREFIX = "fernet:"
SECRET_FIELDS = ("access_token", "refresh_token")
STATUS_FIELDS = (
    "expires_at",
    "version",
    "status",
    "last_refresh_at",
    "consecutive_failures",
    "last_error",
    "inflight_fingerprint",
    "inflight_started_at",
    "inflight_owner",
)
INFLIGHT_FIELDS = ("inflight_fingerprint", "inflight_started_at", "inflight_owner")
PLAINTEXT_AT_REST_WARNING = (
    "the cTrader tokens are stored in Redis in plaintext (EMP_TOKEN_KEY is not set): anyone who can read "
    "Redis or its snapshots can trade on the account. Set EMP_TOKEN_KEY to a Fernet key; the next refresh "
    "stores the pair encrypted"
)


class TokenStatus(StrEnum):
    VALID = "valid"
    REFRESHING = "refreshing"
    REAUTH_REQUIRED = "reauth_required"


class StoredEncryption(StrEnum):
    """How the stored pair sits in Redis, as far as the configured key can tell."""

    ENCRYPTED = "encrypted"  # and the configured EMP_TOKEN_KEY decrypts it
    PLAINTEXT = "plaintext"


@dataclass(frozen=True)
class TokenState:
    """Everything in the hash except the tokens: what the sensor and `emp token status` may read."""

    expires_at: float
    version: int
    status: TokenStatus
    last_refresh_at: float | None
    consecutive_failures: int
    last_error: str
    inflight_fingerprint: str | None
    inflight_started_at: float | None
    inflight_owner: str | None

    def seconds_to_expiry(self, now: float) -> float:
        return self.expires_at - now


@dataclass(frozen=True)
class StoredToken:
    """The decrypted pair plus its state."""

    access_token: str
    refresh_token: str
    state: TokenState

    def __repr__(self) -> str:
        return f"StoredToken(access_token=<redacted>, refresh_token=<redacted>, state={self.state!r})"


class TokenCipher:
    """Fernet encryption of token values at rest; a value written encrypted says so with a prefix."""

    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise TokenKeyError(
                f"EMP_TOKEN_KEY is not a valid Fernet key ({exc}): generate one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
            ) from None

    def encrypt(self, value: str) -> str:
        return ENCRYPTED_PREFIX + self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str) -> str:
        try:
            return self._fernet.decrypt(stored[len(ENCRYPTED_PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise TokenKeyError(
                "the stored cTrader token was encrypted with a different EMP_TOKEN_KEY: set the key it was "
                "written with, or run `emp token authorize` to store a new pair under the current key"
            ) from None


def _optional_float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


class RedisTokenStore:
    """Reads and writes one client's hash; every multi-field write is one MULTI/EXEC transaction."""

    def __init__(
        self,
        client: redis.Redis,
        client_id: str,
        *,
        key_prefix: str = "emp:",
        cipher: TokenCipher | None = None,
    ) -> None:
        self._redis = client
        self.client_id = client_id
        self.key = f"{key_prefix}token:{client_id}"
        self._cipher = cipher

    @property
    def encrypts(self) -> bool:
        """Whether pairs written from here are encrypted (EMP_TOKEN_KEY configured)."""
        return self._cipher is not None

    @property
    def location(self) -> str:
        """The Redis server and key, without a password, for messages."""
        return f"{describe_client(self._redis)} key {self.key}"

    @property
    def command_worst_case_s(self) -> float:
        """The longest one store command can take to fail (timeouts and redis-py's own retries)."""
        return command_worst_case_s(self._redis)

    def refresh_lock(self, *, ttl_s: float, wait_timeout_s: float) -> RedisRefreshLock:
        """The lock that serialises refreshes of this client's pair (one key next to the hash)."""
        return RedisRefreshLock(
            self._redis, f"{self.key}:refresh-lock", ttl_s=ttl_s, wait_timeout_s=wait_timeout_s
        )

    def read_state(self) -> TokenState | None:
        """The non-secret fields only (no decryption, so it works without the key); None if nothing stored."""
        with translate_redis_errors(self._redis):
            values = self._redis.hmget(self.key, STATUS_FIELDS)
        return self._state_from(dict(zip(STATUS_FIELDS, values, strict=True)))

    def read(self) -> StoredToken | None:
        """The decrypted pair and its state; refuses encrypted values when no key is configured."""
        fields = (*SECRET_FIELDS, *STATUS_FIELDS)
        with translate_redis_errors(self._redis):
            values = dict(zip(fields, self._redis.hmget(self.key, fields), strict=True))
        state = self._state_from(values)
        if state is None or not values["access_token"] or not values["refresh_token"]:
            return None
        return StoredToken(
            access_token=self._decode(values["access_token"]),
            refresh_token=self._decode(values["refresh_token"]),
            state=state,
        )

    def stored_encryption(self) -> StoredEncryption | None:
        """How the stored pair is kept; None if none is stored. Decrypts it (and forgets the values) to prove
        the configured key is the one that wrote it: TokenKeyError says what is wrong otherwise."""
        with translate_redis_errors(self._redis):
            values = self._redis.hmget(self.key, SECRET_FIELDS)
        if not all(values):
            return None
        for value in values:
            self._decode(value)
        if any(value.startswith(ENCRYPTED_PREFIX) for value in values):
            return StoredEncryption.ENCRYPTED
        return StoredEncryption.PLAINTEXT

    def write_pair(
        self, access_token: str, refresh_token: str, expires_at: float, refreshed_at: float
    ) -> int:
        """Store a new pair as valid, clearing failures and the in-flight marker; returns the new version."""
        mapping = {
            "access_token": self._encode(access_token),
            "refresh_token": self._encode(refresh_token),
            "expires_at": repr(float(expires_at)),
            "status": TokenStatus.VALID.value,
            "last_refresh_at": repr(float(refreshed_at)),
            "consecutive_failures": "0",
            "last_error": "",
        }
        with translate_redis_errors(self._redis):
            pipeline = self._redis.pipeline(transaction=True)
            pipeline.hincrby(self.key, "version", 1)
            pipeline.hset(self.key, mapping=mapping)
            pipeline.hdel(self.key, *INFLIGHT_FIELDS)
            version, *_ = pipeline.execute()
        return int(version)

    def mark_refresh_in_flight(self, refresh_token_fingerprint: str, owner: str, started_at: float) -> None:
        """Written before the HTTP call: if we die before `write_pair`, the next attempt finds it."""
        with translate_redis_errors(self._redis):
            self._redis.hset(
                self.key,
                mapping={
                    "status": TokenStatus.REFRESHING.value,
                    "inflight_fingerprint": refresh_token_fingerprint,
                    "inflight_started_at": repr(float(started_at)),
                    "inflight_owner": owner,
                },
            )

    def record_failure(self, message: str, *, reauth_required: bool, keep_in_flight: bool) -> None:
        """Count a failed refresh; the marker stays only while the server may have rotated the token."""
        status = (
            TokenStatus.REAUTH_REQUIRED
            if reauth_required
            else (TokenStatus.REFRESHING if keep_in_flight else TokenStatus.VALID)
        )
        with translate_redis_errors(self._redis):
            pipeline = self._redis.pipeline(transaction=True)
            pipeline.hincrby(self.key, "consecutive_failures", 1)
            pipeline.hset(
                self.key, mapping={"status": status.value, "last_error": redact_secrets(message)[:500]}
            )
            if not keep_in_flight:
                pipeline.hdel(self.key, *INFLIGHT_FIELDS)
            pipeline.execute()

    def _encode(self, value: str) -> str:
        return self._cipher.encrypt(value) if self._cipher is not None else value

    def _decode(self, stored: str) -> str:
        if stored.startswith(ENCRYPTED_PREFIX):
            if self._cipher is None:
                raise TokenKeyError(
                    f"the cTrader token in {self.key} is encrypted but EMP_TOKEN_KEY is not set: set it to "
                    "the key the token was written with"
                )
            return self._cipher.decrypt(stored)
        return stored

    @staticmethod
    def _state_from(values: dict[str, str | None]) -> TokenState | None:
        if not values.get("version") or values.get("expires_at") in (None, ""):
            return None
        return TokenState(
            expires_at=float(values["expires_at"] or 0.0),
            version=int(values["version"] or 0),
            status=TokenStatus(values.get("status") or TokenStatus.VALID.value),
            last_refresh_at=_optional_float(values.get("last_refresh_at")),
            consecutive_failures=int(values.get("consecutive_failures") or 0),
            last_error=values.get("last_error") or "",
            inflight_fingerprint=values.get("inflight_fingerprint") or None,
            inflight_started_at=_optional_float(values.get("inflight_started_at")),
            inflight_owner=values.get("inflight_owner") or None,
        )
