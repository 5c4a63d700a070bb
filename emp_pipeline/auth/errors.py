"""Exceptions of the token lifecycle, split by what the caller should do about them.

Transient errors are worth retrying (the same refresh token is still good); terminal ones need a person to
re-authorise the app with `emp token authorize`. No message ever contains a token value.
"""

from __future__ import annotations

REAUTHORIZE_HINT = "Run `emp token authorize` to grant access again and store a new token pair."


class TokenError(Exception):
    """Base class of every token-lifecycle failure."""


class TransientTokenError(TokenError):
    """The token endpoint could not answer (network, timeout, HTTP 5xx/429): retry with backoff.

    `request_may_have_been_processed` is True when the request may have reached the server and rotated the
    refresh token even though no answer came back (read timeout, connection reset): the in-flight marker
    must then stay, so the next attempt can tell a refused token from a lost answer.
    """

    def __init__(self, message: str, *, request_may_have_been_processed: bool) -> None:
        super().__init__(message)
        self.request_may_have_been_processed = request_may_have_been_processed


class TerminalTokenError(TokenError):
    """The token endpoint refused the grant (non-null errorCode or HTTP 4xx): retrying cannot help."""

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code


class TokenRequestMethodError(TokenError):
    """The token endpoint refused the HTTP method (405): a configuration error; nothing was spent."""


class ReauthRequiredError(TokenError):
    """The stored token pair is unusable (status `reauth_required`): a person must re-authorise."""


class TokenNotAuthorizedError(TokenError):
    """No token pair is stored for the client id yet."""


class TokenStoreUnavailableError(TokenError):
    """Redis could not be reached; the message carries the URL without its password and what to do."""


class TokenKeyError(TokenError):
    """An encrypted token cannot be read: `EMP_TOKEN_KEY` is unset, malformed or not the key that wrote it."""


class RotatedPairLostError(TokenError):
    """cTrader rotated the pair but it could not be stored before the refresh lock's lease ran out.

    Terminal: the stored refresh token is spent and the new pair existed only in the process that lost it.
    """


class TokenLockTimeoutError(TransientTokenError):
    """Another refresher held the refresh lock longer than we were willing to wait."""

    def __init__(self, message: str) -> None:
        super().__init__(message, request_may_have_been_processed=False)
