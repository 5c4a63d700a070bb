"""A local cTrader Open API server (JSON over WebSocket) for tests and the latency benchmark.

Written from Spotware's proto definitions (github.com/spotware/openapi-proto-messages) and the Open API
documentation, not from the client: its numbers and codes are spelled out here on purpose, so a wrong
constant in the client shows up as a failing test instead of agreeing with itself. It runs its own event
loop in a background thread so synchronous tests can drive it, and it offers knobs to misbehave the way
the real server can.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

# Payload types, as in OpenApiMessages.proto / OpenApiCommonMessages.proto.
HEARTBEAT = 51
APP_AUTH_REQ, APP_AUTH_RES = 2100, 2101
ACCOUNT_AUTH_REQ, ACCOUNT_AUTH_RES = 2102, 2103
NEW_ORDER_REQ = 2106
SYMBOLS_LIST_REQ, SYMBOLS_LIST_RES = 2114, 2115
SYMBOL_BY_ID_REQ, SYMBOL_BY_ID_RES = 2116, 2117
RECONCILE_REQ, RECONCILE_RES = 2124, 2125
EXECUTION_EVENT = 2126
ORDER_ERROR_EVENT = 2132
DEAL_LIST_REQ, DEAL_LIST_RES = 2133, 2134
ERROR_RES = 2142
TOKEN_INVALIDATED_EVENT = 2147
ACCOUNTS_BY_TOKEN_REQ, ACCOUNTS_BY_TOKEN_RES = 2149, 2150
ORDER_LIST_REQ, ORDER_LIST_RES = 2175, 2176
SUBSCRIBE_SPOTS_REQ, SUBSCRIBE_SPOTS_RES = 2127, 2128
UNSUBSCRIBE_SPOTS_REQ, UNSUBSCRIBE_SPOTS_RES = 2129, 2130
SPOT_EVENT = 2131
GET_TRENDBARS_REQ, GET_TRENDBARS_RES = 2137, 2138
ACCOUNT_REQUESTS = frozenset(
    {
        NEW_ORDER_REQ,
        SYMBOLS_LIST_REQ,
        SYMBOL_BY_ID_REQ,
        RECONCILE_REQ,
        DEAL_LIST_REQ,
        ORDER_LIST_REQ,
        SUBSCRIBE_SPOTS_REQ,
        UNSUBSCRIBE_SPOTS_REQ,
        GET_TRENDBARS_REQ,
    }
)
HISTORY_REQUESTS = frozenset({GET_TRENDBARS_REQ})  # rate limited apart, at 5/s per connection

# ProtoOATrendbarPeriod code -> bar length in minutes (MN1 is a calendar month; 28 days is its shortest).
PERIOD_MINUTES = {
    1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 10, 7: 15, 8: 30, 9: 60,
    10: 240, 11: 720, 12: 1440, 13: 10080, 14: 40320,
}  # fmt: skip
# Widest toTimestamp - fromTimestamp per period code (ms); wider is INCORRECT_BOUNDARIES.
MAX_WINDOW_MS = {
    **dict.fromkeys((1, 2, 3, 4, 5), 302_400_000),
    **dict.fromkeys((6, 7, 8, 9), 21_168_000_000),
    **dict.fromkeys((10, 11, 12), 31_622_400_000),
    **dict.fromkeys((13, 14), 158_112_000_000),
}
PRICE_SCALE = 100_000  # spot prices and trendbar values: integers in 1/100000 of a price unit

# Enums (integers on the wire).
EXEC_ACCEPTED, EXEC_FILLED, EXEC_REJECTED = 2, 3, 7
ORDER_STATUS_ACCEPTED, ORDER_STATUS_FILLED = 1, 2
POSITION_OPEN = 1
DEAL_FILLED = 2
BUY, SELL = 1, 2
MARKET = 1

DROP_BEFORE_EXECUTING = "before_executing"
DROP_AFTER_EXECUTING = "after_executing"
REJECTION_PATHS = ("order_error_event", "execution_event", "error_res")


@dataclass
class FakeSymbol:
    symbol_id: int
    name: str
    digits: int
    pip_position: int
    bid: float
    ask: float
    lot_size: int = 10_000_000  # 100,000 units, in cents
    min_volume: int = 100_000  # 1,000 units
    max_volume: int = 10_000_000_000
    step_volume: int = 100_000
    market_open: bool = True
    swap_long: float = -6.87  # pips per lot per night (swapCalculationType 0)
    swap_short: float = 2.1
    swap_rollover_3days: int = 3  # WEDNESDAY


def default_symbols() -> list[FakeSymbol]:
    return [
        FakeSymbol(1, "EURUSD", digits=5, pip_position=4, bid=1.08500, ask=1.08510),
        FakeSymbol(2, "USDJPY", digits=3, pip_position=2, bid=151.200, ask=151.215),
        FakeSymbol(
            3,
            "XAUUSD",
            digits=2,
            pip_position=1,
            bid=2650.10,
            ask=2650.40,
            lot_size=10_000,
            min_volume=100,
            step_volume=100,
        ),
    ]


@dataclass(eq=False)  # sessions are identities, kept in a set
class _Session:
    websocket: ServerConnection
    app_authenticated: bool = False
    account_tokens: dict[int, str] = field(default_factory=dict)  # authorised account -> token used
    last_received: float = field(default_factory=time.monotonic)
    recent_requests: deque[float] = field(default_factory=deque)
    recent_history_requests: deque[float] = field(default_factory=deque)
    blocked_until: dict[int, float] = field(default_factory=dict)
    spot_subscriptions: set[int] = field(default_factory=set)


def _now_ms() -> int:
    return int(time.time() * 1000)


class FakeCTraderServer:
    """In-memory accounts, symbols, orders, deals and positions behind the cTrader JSON protocol."""

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        account_ids: Iterable[int] = (4242,),
        symbols: Iterable[FakeSymbol] | None = None,
        idle_timeout_s: float = 30.0,
        max_requests_per_second: int = 50,
        retry_after_s: int = 1,
        commission_bps: float = 0.25,
        max_order_notional: float = 10_000_000.0,
        money_digits: int = 2,
        rejection_path: str = "order_error_event",
        send_heartbeats_every_s: float | None = None,
        expired_token_code: str = "CH_ACCESS_TOKEN_INVALID",
        max_history_requests_per_second: int = 5,
        max_trendbars_per_response: int = 5_000,
        trendbar_page_from: str = "oldest",
    ) -> None:
        if rejection_path not in REJECTION_PATHS:
            raise ValueError(f"rejection_path must be one of {REJECTION_PATHS}")
        self.client_id = client_id
        self.client_secret = client_secret
        self.account_ids = tuple(account_ids)
        self.symbols = {symbol.symbol_id: symbol for symbol in (symbols or default_symbols())}
        self.idle_timeout_s = idle_timeout_s
        self.max_requests_per_second = max_requests_per_second
        self.retry_after_s = retry_after_s
        self.commission_bps = commission_bps
        self.max_order_notional = max_order_notional
        self.money_digits = money_digits
        self.rejection_path = rejection_path
        self.send_heartbeats_every_s = send_heartbeats_every_s
        self.expired_token_code = expired_token_code  # the notes allow OA_AUTH_TOKEN_EXPIRED too
        if trendbar_page_from not in ("oldest", "newest"):
            raise ValueError("trendbar_page_from must be 'oldest' or 'newest'")
        self.max_history_requests_per_second = max_history_requests_per_second
        self.max_trendbars_per_response = max_trendbars_per_response
        self.trendbar_page_from = trendbar_page_from  # which end of a capped window an answer holds

        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[int, ...]] = {}  # valid access token -> accounts it grants
        self._expired_tokens: set[str] = set()
        self._ids = itertools.count(1_000_001)
        self.orders: list[dict[str, Any]] = []
        self.deals: list[dict[str, Any]] = []
        self.positions: dict[int, dict[str, Any]] = {}
        self.received: list[tuple[int, dict[str, Any]]] = []
        self.blocked_responses = 0
        self.idle_disconnects = 0
        self.connections_opened = 0
        self.heartbeats_received = 0
        self._drop_next_order: str | None = None
        # (symbol id, period code) -> utcTimestampInMinutes -> raw bar
        self.trendbars: dict[tuple[int, int], dict[int, dict[str, int]]] = {}
        self.history_requests_answered = 0
        self._history_blocks_pending = 0
        self._history_drop: tuple[int, bool] | None = None  # (requests still to let through, answer first)
        self._sessions: set[_Session] = set()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self.port: int | None = None

    # ----- lifecycle ----
    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError(
                "FakeCTraderServer is not started; call start() or use it as a context manager"
            )
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> FakeCTraderServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def start_serving() -> None:
            self._server = await serve(
                self._handle, "127.0.0.1", 0, ping_interval=None, compression=None, close_timeout=1
            )
            self.port = next(iter(self._server.sockets)).getsockname()[1]
            ready.set()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(start_serving())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-ctrader-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeCTraderServer did not start listening within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None
        self._server = None

    def __enter__(self) -> FakeCTraderServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----- test controls ----
    def issue_access_token(self, account_ids: Iterable[int] | None = None) -> str:
        token = "fake-at-" + secrets.token_hex(8)
        with self._lock:
            self._tokens[token] = tuple(self.account_ids if account_ids is None else account_ids)
        return token

    def expire_access_token(self, token: str) -> None:
        """The token stops working silently (what happens when it outlives expiresIn)."""
        with self._lock:
            self._tokens.pop(token, None)
            self._expired_tokens.add(token)

    def refresh_access_token(self, old_token: str) -> str:
        """An OAuth refresh: a new token, the old one dies, its sessions get AccountsTokenInvalidated."""
        with self._lock:
            account_ids = self._tokens.get(old_token, self.account_ids)
        new_token = self.issue_access_token(account_ids)
        self.invalidate_access_token(old_token, reason="Access token was refreshed")
        return new_token

    def invalidate_access_token(
        self, token: str, reason: str = "Access Token is expired or recalled"
    ) -> None:
        self.expire_access_token(token)
        self._run(self._send_token_invalidated(token, reason))

    def drop_connection_on_next_order(self, when: str) -> None:
        if when not in (DROP_BEFORE_EXECUTING, DROP_AFTER_EXECUTING):
            raise ValueError(f"when must be {DROP_BEFORE_EXECUTING!r} or {DROP_AFTER_EXECUTING!r}")
        with self._lock:
            self._drop_next_order = when

    def drop_all_connections(self) -> None:
        self._run(self._abort_all())

    def add_trendbars(self, symbol_name: str, period: int, bars: Iterable[dict[str, int]]) -> None:
        """Store history as raw ProtoOATrendbar dicts (low, deltas, volume, utcTimestampInMinutes)."""
        with self._lock:
            series = self.trendbars.setdefault((self._symbol_by_name(symbol_name).symbol_id, period), {})
            for bar in bars:
                series[int(bar["utcTimestampInMinutes"])] = dict(bar)

    def generate_trendbars(
        self, symbol_name: str, period: int, start: datetime, end: datetime, seed: int = 1
    ) -> list[dict[str, int]]:
        """A seeded random walk of bars opening in [start, end), FX hours (closed Fri 22:00 - Sun 22:00 UTC).

        Returns the raw bars stored, so a test can compare what the client decodes with what was served.
        """
        symbol = self._symbol_by_name(symbol_name)
        rng = random.Random(seed)
        grid = PRICE_SCALE // 10**symbol.digits if symbol.digits <= 5 else 1
        level = round(symbol.bid * PRICE_SCALE / grid)
        step = PERIOD_MINUTES[period]
        minute = int(start.timestamp()) // 60 // step * step
        last = int(end.timestamp()) // 60
        bars = []
        while minute < last:
            opened = datetime.fromtimestamp(minute * 60, tz=UTC)
            weekday, hour = opened.weekday(), opened.hour
            closed = weekday == 5 or (weekday == 4 and hour >= 22) or (weekday == 6 and hour < 22)
            if not closed:
                moves = [level + rng.randint(-20, 20) for _ in range(3)]
                low, high = min(level, *moves), max(level, *moves)
                close = moves[-1]
                bars.append(
                    {
                        "utcTimestampInMinutes": minute,
                        "low": low * grid,
                        "deltaOpen": (level - low) * grid,
                        "deltaClose": (close - low) * grid,
                        "deltaHigh": (high - low) * grid,
                        "volume": rng.randint(1, 900),
                    }
                )
                level = close
            minute += step
        self.add_trendbars(symbol_name, period, bars)
        return bars

    def block_next_history_requests(self, count: int) -> None:
        """The next `count` trendbar requests get BLOCKED_PAYLOAD_TYPE with retryAfter, as if rate limited."""
        with self._lock:
            self._history_blocks_pending = count

    def drop_connection_on_history_request(self, after: int, *, answer_first: bool = False) -> None:
        """Let `after` trendbar requests through, then abort the socket on the next (answered or not)."""
        with self._lock:
            self._history_drop = (after, answer_first)

    def push_spot(self, symbol_name: str, *, bid: float | None = None, ask: float | None = None) -> None:
        """New prices; subscribed sessions get a SpotEvent carrying only the sides that changed."""
        with self._lock:
            symbol = self._symbol_by_name(symbol_name)
            if bid is not None:
                symbol.bid = bid
            if ask is not None:
                symbol.ask = ask
        self._run(self._broadcast_spot(symbol, bid is not None, ask is not None))

    def set_market_open(self, symbol_name: str, is_open: bool) -> None:
        with self._lock:
            self._symbol_by_name(symbol_name).market_open = is_open

    def orders_for(self, client_order_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [order for order in self.orders if order.get("clientOrderId") == client_order_id]

    def requests_of_type(self, payload_type: int) -> list[dict[str, Any]]:
        with self._lock:
            return [payload for received_type, payload in self.received if received_type == payload_type]

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)

    def _symbol_by_name(self, name: str) -> FakeSymbol:
        for symbol in self.symbols.values():
            if symbol.name == name:
                return symbol
        raise KeyError(name)

    def _run(self, coroutine: Any) -> Any:
        if self._loop is None:
            raise RuntimeError("FakeCTraderServer is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _send_token_invalidated(self, token: str, reason: str) -> None:
        for session in list(self._sessions):
            affected = [account for account, used in session.account_tokens.items() if used == token]
            for account in affected:
                del session.account_tokens[account]
            if affected:
                await self._send(
                    session, TOKEN_INVALIDATED_EVENT, {"ctidTraderAccountIds": affected, "reason": reason}
                )

    async def _broadcast_spot(self, symbol: FakeSymbol, with_bid: bool, with_ask: bool) -> None:
        for session in list(self._sessions):
            if symbol.symbol_id in session.spot_subscriptions:
                await self._send_spot(session, symbol, with_bid, with_ask)

    async def _send_spot(self, session: _Session, symbol: FakeSymbol, with_bid: bool, with_ask: bool) -> None:
        account_id = next(iter(session.account_tokens), 0)
        event: dict[str, Any] = {"ctidTraderAccountId": account_id, "symbolId": symbol.symbol_id}
        if with_bid:
            event["bid"] = round(symbol.bid * PRICE_SCALE)
        if with_ask:
            event["ask"] = round(symbol.ask * PRICE_SCALE)
        event["timestamp"] = _now_ms()
        await self._send(session, SPOT_EVENT, event)

    async def _abort_all(self) -> None:
        for session in list(self._sessions):
            session.websocket.transport.abort()

    # ----- connection handling ----
    async def _handle(self, websocket: ServerConnection) -> None:
        session = _Session(websocket)
        self._sessions.add(session)
        self.connections_opened += 1
        watchdog = asyncio.create_task(self._idle_watchdog(session))
        heartbeats = asyncio.create_task(self._heartbeats(session)) if self.send_heartbeats_every_s else None
        try:
            async for raw in websocket:
                session.last_received = time.monotonic()
                try:
                    message = json.loads(raw)
                    payload_type = int(message["payloadType"])
                    payload = message.get("payload") or {}
                    client_msg_id = message.get("clientMsgId")
                except (ValueError, TypeError, KeyError):
                    await self._send(
                        session, ERROR_RES, {"errorCode": "INVALID_REQUEST", "description": "bad JSON"}
                    )
                    websocket.transport.abort()
                    return
                await self._dispatch(session, payload_type, payload, client_msg_id)
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            if heartbeats is not None:
                heartbeats.cancel()
            self._sessions.discard(session)

    async def _idle_watchdog(self, session: _Session) -> None:
        while True:
            await asyncio.sleep(min(self.idle_timeout_s / 4, 1.0))
            if time.monotonic() - session.last_received > self.idle_timeout_s:
                self.idle_disconnects += 1
                session.websocket.transport.abort()
                return

    async def _heartbeats(self, session: _Session) -> None:
        assert self.send_heartbeats_every_s is not None
        while True:
            await asyncio.sleep(self.send_heartbeats_every_s)
            await self._send(session, HEARTBEAT, {})

    async def _send(
        self, session: _Session, payload_type: int, payload: dict[str, Any], client_msg_id: str | None = None
    ) -> None:
        frame: dict[str, Any] = {"payloadType": payload_type, "payload": payload}
        if client_msg_id is not None:
            frame["clientMsgId"] = client_msg_id
        with contextlib.suppress(ConnectionClosed):
            await session.websocket.send(json.dumps(frame))

    async def _error(
        self, session: _Session, client_msg_id: str | None, code: str, description: str, **extra: Any
    ) -> None:
        await self._send(
            session, ERROR_RES, {"errorCode": code, "description": description, **extra}, client_msg_id
        )

    def _rate_limited(self, session: _Session, payload_type: int) -> bool:
        now = time.monotonic()
        if session.blocked_until.get(payload_type, 0.0) > now:
            return True
        windows = [(session.recent_requests, self.max_requests_per_second)]
        if payload_type in HISTORY_REQUESTS:
            windows.append((session.recent_history_requests, self.max_history_requests_per_second))
            with self._lock:
                injected, self._history_blocks_pending = (
                    self._history_blocks_pending > 0,
                    max(self._history_blocks_pending - 1, 0),
                )
            if injected:
                session.blocked_until[payload_type] = now + self.retry_after_s
                return True
        for window, limit in windows:
            while window and now - window[0] >= 1.0:
                window.popleft()
            if len(window) >= limit:
                session.blocked_until[payload_type] = now + self.retry_after_s
                return True
        for window, _ in windows:
            window.append(now)
        return False

    async def _dispatch(
        self, session: _Session, payload_type: int, payload: dict[str, Any], msg_id: str | None
    ) -> None:
        if payload_type == HEARTBEAT:
            self.heartbeats_received += 1
            return
        with self._lock:
            self.received.append((payload_type, payload))
        if self._rate_limited(session, payload_type):
            self.blocked_responses += 1
            await self._error(
                session,
                msg_id,
                "BLOCKED_PAYLOAD_TYPE",
                "Request frequency exceeded",
                retryAfter=self.retry_after_s,
            )
            return
        if payload_type == APP_AUTH_REQ:
            await self._application_auth(session, payload, msg_id)
            return
        if not session.app_authenticated:
            await self._error(
                session, msg_id, "CH_CLIENT_NOT_AUTHENTICATED", "Open API application is not authorized"
            )
            return
        if payload_type == ACCOUNT_AUTH_REQ:
            await self._account_auth(session, payload, msg_id)
        elif payload_type == ACCOUNTS_BY_TOKEN_REQ:
            await self._accounts_by_token(session, payload, msg_id)
        elif payload_type in ACCOUNT_REQUESTS:
            account_id = int(payload.get("ctidTraderAccountId", 0))
            token = session.account_tokens.get(account_id)
            if token is None:
                await self._error(
                    session, msg_id, "ACCOUNT_NOT_AUTHORIZED", f"Account {account_id} is not authorized"
                )
                return
            if not self._token_valid(token):
                del session.account_tokens[account_id]
                await self._error(session, msg_id, self.expired_token_code, "Access token expired")
                return
            handler = {
                NEW_ORDER_REQ: self._new_order,
                SYMBOLS_LIST_REQ: self._symbols_list,
                SYMBOL_BY_ID_REQ: self._symbol_by_id,
                RECONCILE_REQ: self._reconcile,
                ORDER_LIST_REQ: self._order_list,
                DEAL_LIST_REQ: self._deal_list,
                SUBSCRIBE_SPOTS_REQ: self._subscribe_spots,
                UNSUBSCRIBE_SPOTS_REQ: self._unsubscribe_spots,
                GET_TRENDBARS_REQ: self._get_trendbars,
            }[payload_type]
            await handler(session, account_id, payload, msg_id)
        else:
            await self._error(session, msg_id, "INVALID_REQUEST", f"Unsupported payloadType {payload_type}")

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            return token in self._tokens

    # ----- authentication ----
    async def _application_auth(self, session: _Session, payload: dict[str, Any], msg_id: str | None) -> None:
        if session.app_authenticated:
            await self._error(session, msg_id, "CH_CLIENT_ALREADY_AUTHENTICATED", "Already authenticated")
        elif payload.get("clientId") != self.client_id or payload.get("clientSecret") != self.client_secret:
            await self._error(
                session, msg_id, "CH_CLIENT_AUTH_FAILURE", "clientId or clientSecret is incorrect"
            )
        else:
            session.app_authenticated = True
            await self._send(session, APP_AUTH_RES, {}, msg_id)

    async def _account_auth(self, session: _Session, payload: dict[str, Any], msg_id: str | None) -> None:
        account_id = int(payload.get("ctidTraderAccountId", 0))
        token = str(payload.get("accessToken", ""))
        with self._lock:
            granted = self._tokens.get(token)
        if granted is None:
            await self._error(session, msg_id, "CH_ACCESS_TOKEN_INVALID", "Access token expired")
        elif account_id not in granted:
            await self._error(
                session, msg_id, "CH_CTID_TRADER_ACCOUNT_NOT_FOUND", f"Account {account_id} is not granted"
            )
        elif account_id in session.account_tokens and self._token_valid(session.account_tokens[account_id]):
            await self._error(
                session, msg_id, "ALREADY_LOGGED_IN", f"Account {account_id} is already authorized"
            )
        else:
            session.account_tokens[account_id] = token
            await self._send(session, ACCOUNT_AUTH_RES, {"ctidTraderAccountId": account_id}, msg_id)

    async def _accounts_by_token(
        self, session: _Session, payload: dict[str, Any], msg_id: str | None
    ) -> None:
        token = str(payload.get("accessToken", ""))
        with self._lock:
            granted = self._tokens.get(token)
        if granted is None:
            await self._error(session, msg_id, "CH_ACCESS_TOKEN_INVALID", "Access token expired")
            return
        accounts = [{"ctidTraderAccountId": account, "isLive": False} for account in granted]
        await self._send(
            session,
            ACCOUNTS_BY_TOKEN_RES,
            {"accessToken": token, "permissionScope": 1, "ctidTraderAccount": accounts},
            msg_id,
        )

    # ----- symbols ----
    async def _symbols_list(
        self, session: _Session, account_id: int, payload: dict[str, Any], msg_id: str | None
    ) -> None:
        light = [
            {"symbolId": symbol.symbol_id, "symbolName": symbol.name, "enabled": True}
            for symbol in self.symbols.values()
        ]
        await self._send(
            session, SYMBOLS_LIST_RES, {"ctidTraderAccountId": account_id, "symbol": light}, msg_id
        )

    async def _known_symbol_ids(
        self, session: _Session, payload: dict[str, Any], msg_id: str | None
    ) -> list[int] | None:
        """The request's symbol ids, or None after answering SYMBOL_NOT_FOUND for the unknown ones."""
        wanted = [int(symbol_id) for symbol_id in payload.get("symbolId", [])]
        unknown = [symbol_id for symbol_id in wanted if symbol_id not in self.symbols]
        if unknown:
            await self._error(session, msg_id, "SYMBOL_NOT_FOUND", f"Symbols {unknown} not found")
            return None
        return wanted

    async def _symbol_by_id(
        self, session: _Session, account_id: int, payload: dict[str, Any], msg_id: str | None
    ) -> None:
        wanted = await self._known_symbol_ids(session, payload, msg_id)
        if wanted is None:
            return
        full = [
            {
                "symbolId": symbol.symbol_id,
                "digits": symbol.digits,
                "pipPosition": symbol.pip_position,
                "lotSize": symbol.lot_size,
                "minVolume": symbol.min_volume,
                "maxVolume": symbol.max_volume,
                "stepVolume": symbol.step_volume,
                "enableShortSelling": True,
                "swapLong": symbol.swap_long,
                "swapShort": symbol.swap_short,
                "swapRollover3Days": symbol.swap_rollover_3days,
                "swapCalculationType": 0,
            }
            for symbol in (self.symbols[symbol_id] for symbol_id in wanted)
        ]
        await self._send(
            session, SYMBOL_BY_ID_RES, {"ctidTraderAccountId": account_id, "symbol": full}, msg_id
        )

    # ----- orders ----
    async def _reject(
        self,
        session: _Session,
        account_id: int,
        msg_id: str | None,
        code: str,
        description: str,
        order: dict[str, Any] | None = None,
    ) -> None:
        if self.rejection_path == "error_res" or (order is None and self.rejection_path == "execution_event"):
            await self._error(session, msg_id, code, description, ctidTraderAccountId=account_id)
        elif self.rejection_path == "execution_event":
            assert order is not None
            order["orderStatus"] = 3
            await self._send(
                session,
                EXECUTION_EVENT,
                {
                    "ctidTraderAccountId": account_id,
                    "executionType": EXEC_REJECTED,
                    "order": order,
                    "errorCode": code,
                },
                msg_id,
            )
        else:
            await self._send(
                session,
                ORDER_ERROR_EVENT,
                {"ctidTraderAccountId": account_id, "errorCode": code, "description": description},
                msg_id,
            )

    async def _new_order(
        self, session: _Session, account_id: int, payload: dict[str, Any], msg_id: str | None
    ) -> None:
        with self._lock:
            drop, self._drop_next_order = self._drop_next_order, None
        if drop == DROP_BEFORE_EXECUTING:
            session.websocket.transport.abort()
            return
        symbol = self.symbols.get(int(payload.get("symbolId", 0)))
        side = int(payload.get("tradeSide", 0))
        volume = int(payload.get("volume", 0))
        if symbol is None:
            await self._reject(session, account_id, msg_id, "SYMBOL_NOT_FOUND", "Symbol not found")
            return
        if int(payload.get("orderType", 0)) != MARKET or side not in (BUY, SELL):
            await self._error(session, msg_id, "INVALID_REQUEST", "Only MARKET BUY/SELL orders are simulated")
            return
        now = _now_ms()
        order = {
            "orderId": next(self._ids),
            "tradeData": {
                "symbolId": symbol.symbol_id,
                "volume": volume,
                "tradeSide": side,
                "openTimestamp": now,
                **({"label": payload["label"]} if "label" in payload else {}),
                **({"comment": payload["comment"]} if "comment" in payload else {}),
            },
            "orderType": MARKET,
            "orderStatus": ORDER_STATUS_ACCEPTED,
            "executedVolume": 0,
            "utcLastUpdateTimestamp": now,
            **({"clientOrderId": payload["clientOrderId"]} if "clientOrderId" in payload else {}),
            **{key: payload[key] for key in ("relativeStopLoss", "relativeTakeProfit") if key in payload},
        }
        if (
            volume < symbol.min_volume
            or volume > symbol.max_volume
            or (volume - symbol.min_volume) % symbol.step_volume
        ):
            await self._reject(
                session, account_id, msg_id, "TRADING_BAD_VOLUME", f"Invalid volume {volume}", order
            )
            return
        if not symbol.market_open:
            await self._reject(session, account_id, msg_id, "MARKET_CLOSED", "Market is closed", order)
            return
        price = symbol.ask if side == BUY else symbol.bid
        units = volume / 100
        if units * price > self.max_order_notional:
            await self._reject(session, account_id, msg_id, "NOT_ENOUGH_MONEY", "Not enough money", order)
            return
        with self._lock:
            self.orders.append(order)
        accepted = json.loads(json.dumps(order))
        position_id = next(self._ids)
        commission = round(units * price * self.commission_bps / 10_000 * 10**self.money_digits)
        deal = {
            "dealId": next(self._ids),
            "orderId": order["orderId"],
            "positionId": position_id,
            "volume": volume,
            "filledVolume": volume,
            "symbolId": symbol.symbol_id,
            "createTimestamp": now,
            "executionTimestamp": now,
            "utcLastUpdateTimestamp": now,
            "executionPrice": price,
            "tradeSide": side,
            "dealStatus": DEAL_FILLED,
            "commission": -commission,
            "moneyDigits": self.money_digits,
        }
        scale = 100_000
        position = {
            "positionId": position_id,
            "tradeData": dict(order["tradeData"]),
            "positionStatus": POSITION_OPEN,
            "swap": 0,
            "price": price,
            "utcLastUpdateTimestamp": now,
            "commission": -commission,
            "moneyDigits": self.money_digits,
        }
        direction = 1 if side == BUY else -1
        if "relativeStopLoss" in payload:
            position["stopLoss"] = round(
                price - direction * int(payload["relativeStopLoss"]) / scale, symbol.digits
            )
        if "relativeTakeProfit" in payload:
            position["takeProfit"] = round(
                price + direction * int(payload["relativeTakeProfit"]) / scale, symbol.digits
            )
        with self._lock:
            order.update(
                orderStatus=ORDER_STATUS_FILLED,
                executedVolume=volume,
                executionPrice=price,
                positionId=position_id,
            )
            self.deals.append(deal)
            self.positions[position_id] = position
        if drop == DROP_AFTER_EXECUTING:
            session.websocket.transport.abort()
            return
        base = {"ctidTraderAccountId": account_id}
        await self._send(
            session, EXECUTION_EVENT, {**base, "executionType": EXEC_ACCEPTED, "order": accepted}, msg_id
        )
        await self._send(
            session,
            EXECUTION_EVENT,
            {**base, "executionType": EXEC_FILLED, "order": order, "position": position, "deal": deal},
            msg_id,
        )

    async def _reconcile(
        self, session: _Session, account_id: int, payload: dict[str, Any], msg_id: str | None
    ) -> None:
        with self._lock:
            positions = [p for p in self.positions.values() if p["positionStatus"] == POSITION_OPEN]
            pending = [o for o in self.orders if o["orderStatus"] == ORDER_STATUS_ACCEPTED]
        await self._send(
            session,
            RECONCILE_RES,
            {"ctidTraderAccountId": account_id, "position": positions, "order": pending},
            msg_id,
        )

    async def _order_list(
        self, session: _Session, account_id: int, payload: dict[str, Any], msg_id: str | None
    ) -> None:
        start, end = int(payload.get("fromTimestamp", 0)), int(payload.get("toTimestamp", 2147483646000))
        with self._lock:
            orders = [o for o in self.orders if start <= o["utcLastUpdateTimestamp"] <= end]
        await self._send(
            session,
            ORDER_LIST_RES,
            {"ctidTraderAccountId": account_id, "order": orders, "hasMore": False},
            msg_id,
        )

    async def _deal_list(
        self, session: _Session, account_id: int, payload: dict[str, Any], msg_id: str | None
    ) -> None:
        start, end = int(payload.get("fromTimestamp", 0)), int(payload.get("toTimestamp", 2147483646000))
        with self._lock:
            deals = [d for d in self.deals if start <= d["executionTimestamp"] <= end]
        await self._send(
            session,
            DEAL_LIST_RES,
            {"ctidTraderAccountId": account_id, "deal": deals, "hasMore": False},
            msg_id,
        )

    # ----- market data ----
    async def _subscribe_spots(
        self, session: _Session, account_id: int, payload: dict[str, Any], msg_id: str | None
    ) -> None:
        wanted = await self._known_symbol_ids(session, payload, msg_id)
        if wanted is None:
            return
        already = [symbol_id for symbol_id in wanted if symbol_id in session.spot_subscriptions]
        if already:
            await self._error(session, msg_id, "ALREADY_SUBSCRIBED", f"Already subscribed to {already}")
            return
        session.spot_subscriptions.update(wanted)
        await self._send(session, SUBSCRIBE_SPOTS_RES, {"ctidTraderAccountId": account_id}, msg_id)
        for symbol_id in wanted:  # the "technical" first event: latest prices, even with the market closed
            await self._send_spot(session, self.symbols[symbol_id], True, True)

    async def _unsubscribe_spots(
        self, session: _Session, account_id: int, payload: dict[str, Any], msg_id: str | None
    ) -> None:
        wanted = {int(symbol_id) for symbol_id in payload.get("symbolId", [])}
        if not wanted <= session.spot_subscriptions:
            missing = sorted(wanted - session.spot_subscriptions)
            await self._error(session, msg_id, "NOT_SUBSCRIBED_TO_SPOTS", f"Not subscribed to {missing}")
            return
        session.spot_subscriptions -= wanted
        await self._send(session, UNSUBSCRIBE_SPOTS_RES, {"ctidTraderAccountId": account_id}, msg_id)

    def _history_drop_due(self) -> bool | None:
        """None to answer normally; else whether to answer before the socket is aborted."""
        with self._lock:
            if self._history_drop is None:
                return None
            remaining, answer_first = self._history_drop
            if remaining > 0:
                self._history_drop = (remaining - 1, answer_first)
                return None
            self._history_drop = None
            return answer_first

    async def _get_trendbars(
        self, session: _Session, account_id: int, payload: dict[str, Any], msg_id: str | None
    ) -> None:
        drop = self._history_drop_due()
        if drop is False:
            session.websocket.transport.abort()
            return
        symbol_id, period = int(payload.get("symbolId", 0)), int(payload.get("period", 0))
        if symbol_id not in self.symbols:
            await self._error(session, msg_id, "SYMBOL_NOT_FOUND", f"Symbol {symbol_id} not found")
            return
        if period not in PERIOD_MINUTES:
            await self._error(session, msg_id, "INVALID_REQUEST", f"Unknown period {period}")
            return
        start, end = payload.get("fromTimestamp"), payload.get("toTimestamp")
        if start is None or end is None or not 0 <= int(start) <= int(end) <= 2147483646000:
            await self._error(session, msg_id, "INCORRECT_BOUNDARIES", "fromTimestamp/toTimestamp invalid")
            return
        if int(end) - int(start) > MAX_WINDOW_MS[period]:
            await self._error(
                session, msg_id, "INCORRECT_BOUNDARIES", f"Period is too large for {period}: {start}..{end}"
            )
            return
        with self._lock:
            series = self.trendbars.get((symbol_id, period), {})
            bars = [series[minute] for minute in sorted(series) if int(start) <= minute * 60_000 <= int(end)]
        if payload.get("count"):
            bars = bars[-int(payload["count"]) :]
        cap = self.max_trendbars_per_response
        has_more = len(bars) > cap
        if has_more:
            bars = bars[:cap] if self.trendbar_page_from == "oldest" else bars[-cap:]
        self.history_requests_answered += 1
        wire = [{key: value for key, value in bar.items() if value != 0} | {"period": period} for bar in bars]
        await self._send(
            session,
            GET_TRENDBARS_RES,
            {
                "ctidTraderAccountId": account_id,
                "period": period,
                "trendbar": wire,
                "symbolId": symbol_id,
                "hasMore": has_more,
            },
            msg_id,
        )
        if drop:
            session.websocket.transport.abort()


class FakeTokenProvider:
    """Stands in for the auth package's TokenManager against the fake server: refresh = a new server token."""

    def __init__(self, server: FakeCTraderServer, account_ids: Iterable[int] | None = None) -> None:
        self._server = server
        self.current = server.issue_access_token(account_ids)
        self.refreshes = 0
        self._lock = threading.Lock()

    def get_access_token(self) -> str:
        with self._lock:
            return self.current

    def force_refresh(self, rejected_access_token: str) -> str:
        """As the token manager: refresh only if the store still holds the rejected token."""
        with self._lock:
            if self.current == rejected_access_token:
                self.current = self._server.refresh_access_token(self.current)
                self.refreshes += 1
            return self.current

    def rotate_elsewhere(self) -> str:
        """Another process refreshed the token: the store has a new one, sessions on the old get 2147."""
        with self._lock:
            self.current = self._server.refresh_access_token(self.current)
            return self.current
