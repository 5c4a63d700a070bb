"""The cTrader OAuth token lifecycle: kept valid in Redis, refreshed once, never logged.

Modules: `oauth_client` (the two grants against `<CTRADER_TOKEN_URL>/apps/token`, errors split into transient
and terminal), `token_store` (one Redis hash per client id, Fernet-encrypted tokens when `EMP_TOKEN_KEY` is
set), `refresh_lock` (SET NX PX + Lua compare-and-delete), `token_manager` (refresh policy, retries, health),
`commands` (`emp token authorize` / `emp token status`), `redaction` (tokens out of logs and messages).

Refresh tokens are single-use and rotate, which shapes everything:
- Refreshes are serialised by one Redis lock across threads and processes; the store is re-read after the
  lock is taken, so callers that waited get the pair the lock holder stored and send nothing.
- The new pair, its expiry and an incremented version are written in one MULTI/EXEC before anyone uses them.
- Before each refresh request an in-flight marker (the fingerprint of the refresh token being spent, when,
  by which host:pid:thread) is written; storing the new pair clears it, and so does an answer that proves
  nothing was spent (HTTP 5xx/429, connection refused).
- If the marker is still there for the stored refresh token, the previous attempt died or lost its answer.
  The manager tries the token once more: if the earlier request never reached cTrader, that works and
  nothing was lost. If cTrader refuses it, the status becomes `reauth_required` with a message saying the
  new pair was lost, and nothing retries it again.

What cannot be recovered: a process killed (or Redis lost) after cTrader rotated the token but before the
new pair was stored loses the only valid refresh token; cTrader offers no way to get it back. The design
makes that loss immediate and explicit instead of a retry loop, and a person must run `emp token authorize`.
The access token stored before the loss may still work until cTrader invalidates it (a refresh ends the
sessions of the old access token), so trading stops no later than that.
"""
