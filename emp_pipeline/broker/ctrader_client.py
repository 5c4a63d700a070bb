"""An asyncio cTrader Open API client over JSON/WebSocket.

Why not the official SDK: it is Twisted-based, batches sends once per second and does not verify TLS.
This client keeps one connection, matches replies to requests by `clientMsgId`, routes execution events
to the order that caused them, sends heartbeats, limits its own request rate, and repairs the session
(reconnect, application then account auth, token re-read or refresh) without ever resending an order it
cannot prove the server never saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import ssl
import statistics
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from emp_pipeline.broker import ctrader_protocol as proto
from emp_pipeline.broker.interface import (
    AccessTokenProvider,
    BrokerAuthError,
    BrokerConnectionError,
    BrokerError,
    Fill,
    OrderRequest,
    OrderResult,
    OrderStatus,
    Position,
    ReconcileReport,
    SymbolNotFoundError,
)

log = logging.getLogger(__name__)

DEMO_URL = "wss://demo.ctraderapi.com:5036"
_RECONCILE_WINDOW_MARGIN_MS = 60_000  # clock skew between us and the server when searching by time window


class CTraderConfigError(BrokerError, ValueError):
    """The cTrader connection settings are unusable as given."""


class CTraderApiError(BrokerError):
    """The server answered a request with an error (ProtoOAErrorRes or OrderErrorEvent)."""

    def __init__(self, code: str, description: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(f"cTrader error {code}: {description}" if description else f"cTrader error {code}")
        self.code = code
        self.description = description
        self.retry_after_s = retry_after_s

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> CTraderApiError:
        retry_after = payload.get("retryAfter")
        return cls(
            str(payload.get("errorCode", "UNKNOWN")),
            str(payload.get("description", "")),
            None if retry_after is None else float(retry_after),
        )


class _ConnectionLostError(BrokerConnectionError):
    """The socket died under a request; callers decide whether the request may be repeated."""


@dataclass(frozen=True)
class CTraderConfig:
    """Connection settings; timings are parameters so tests can run a whole session in milliseconds."""

    url: str
    client_id: str
    client_secret: str = field(repr=False)
    account_id: int
    allow_plaintext_loopback: bool = False
    heartbeat_interval_s: float | None = 10.0
    request_timeout_s: float = 10.0
    fill_timeout_s: float = 15.0
    max_requests_per_second: float = 40.0  # the server allows 50/s per connection
    max_history_requests_per_second: float = 4.0  # historical data (trendbars): the server allows 5/s
    max_rate_limit_retries: int = 5
    reconnect_initial_delay_s: float = 0.5
    reconnect_max_delay_s: float = 30.0
    max_reconnect_attempts: int = 6
    reconcile_settle_s: float = 1.0  # let an in-flight order land before concluding it is absent
    order_lookback_s: float = 2 * 86_400.0
    check_before_submit: bool = True

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.url)
            host = parts.hostname or ""
        except ValueError as exc:
            raise CTraderConfigError(f"cTrader url {self.url!r} is not a URL") from exc
        if parts.scheme == "ws":
            if not self.allow_plaintext_loopback or not _is_loopback(host):
                raise CTraderConfigError(
                    f"cTrader url {self.url!r} is plain ws://; use wss:// (e.g. {DEMO_URL}). Plain ws:// is "
                    "only allowed to a loopback test server with allow_plaintext_loopback=True"
                )
        elif parts.scheme != "wss":
            raise CTraderConfigError(f"cTrader url {self.url!r} must start with wss://")
        if not self.client_id or not self.client_secret:
            raise CTraderConfigError(
                "cTrader client_id and client_secret are required (CTRADER_CLIENT_ID/SECRET)"
            )
        if self.account_id <= 0:
            raise CTraderConfigError(
                f"cTrader account_id must be the positive ctidTraderAccountId, not {self.account_id}"
            )
        if self.max_requests_per_second <= 0:
            raise CTraderConfigError("max_requests_per_second must be > 0")
        if self.max_history_requests_per_second <= 0:
            raise CTraderConfigError("max_history_requests_per_second must be > 0")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class CTraderSymbol:
    symbol_id: int
    name: str
    digits: int
    pip_position: int
    lot_size: int | None
    min_volume: int | None
    max_volume: int | None
    step_volume: int | None
    swap_long: float | None = None  # per lot per night, in the unit swap_calculation_type names
    swap_short: float | None = None
    swap_rollover_3days: proto.DayOfWeek | None = None  # the weekday charged three nights
    swap_calculation_type: int | None = None  # ProtoOASwapCalculationType: 0 pips, 1 percent a year


@dataclass
class CTraderClientStats:
    """Counters the tests and the benchmark read to prove the recovery paths ran."""

    connections: int = 0
    account_auths: int = 0
    token_refreshes: int = 0
    rate_limit_backoffs: int = 0
    orders_sent: int = 0
    orders_found_after_disconnect: int = 0
    orders_resent_after_proof_of_absence: int = 0
    trendbar_requests: int = 0


@dataclass(frozen=True)
class SpotQuote:
    """Bid and ask of one symbol at one moment, from a SpotEvent."""

    bid: float
    ask: float
    time: datetime

    @property
    def spread(self) -> float:
        return self.ask - self.bid


@dataclass(frozen=True)
class SpreadSample:
    """Quotes of one symbol seen while sampling: the latest is the price now, all give the typical spread."""

    symbol: str
    digits: int
    pip_position: int
    quotes: tuple[SpotQuote, ...]

    @property
    def latest(self) -> SpotQuote:
        return self.quotes[-1]

    @property
    def bid(self) -> float:
        return self.latest.bid

    @property
    def ask(self) -> float:
        return self.latest.ask

    @property
    def spread(self) -> float:
        return round(self.latest.spread, self.digits)

    @property
    def median_spread(self) -> float:
        return round(statistics.median(quote.spread for quote in self.quotes), self.digits)

    @property
    def max_spread(self) -> float:
        return round(max(quote.spread for quote in self.quotes), self.digits)

    @property
    def spread_pips(self) -> float:
        return self.spread * 10**self.pip_position


class _SpotCollector:
    """Accumulates SpotEvents of some symbols; an event may carry only the side that changed."""

    def __init__(self, symbol_ids: Iterable[int], digits: Mapping[int, int]) -> None:
        self._digits = dict(digits)
        self._last: dict[int, dict[str, int]] = {symbol_id: {} for symbol_id in symbol_ids}
        self.quotes: dict[int, list[SpotQuote]] = {symbol_id: [] for symbol_id in self._last}
        self.complete = asyncio.Event()

    def on_spot(self, payload: Mapping[str, Any]) -> None:
        symbol_id = int(payload.get("symbolId", 0))
        last = self._last.get(symbol_id)
        if last is None:
            return
        for side in ("bid", "ask"):
            if payload.get(side) is not None:
                last[side] = int(payload[side])
        if "bid" not in last or "ask" not in last:
            return
        digits = self._digits[symbol_id]
        stamp = payload.get("timestamp")
        self.quotes[symbol_id].append(
            SpotQuote(
                bid=proto.price_from_protocol(last["bid"], digits),
                ask=proto.price_from_protocol(last["ask"], digits),
                time=_timestamp(int(stamp)) if stamp is not None else datetime.now(UTC),
            )
        )
        if all(self.quotes.values()):
            self.complete.set()


class _Pacer:
    """Spaces sends to a rate, and holds them all while the server says a payload type is blocked."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second
        self._next_at = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        wait = self._next_at - now
        self._next_at = max(now, self._next_at) + self._interval
        if wait > 0:
            await asyncio.sleep(wait)

    def hold(self, seconds: float) -> None:
        self._next_at = max(self._next_at, time.monotonic() + seconds)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _timestamp(ms: int | None) -> datetime:
    return datetime.fromtimestamp((ms or 0) / 1000, tz=UTC)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_weekday(value: Any) -> proto.DayOfWeek | None:
    return None if value is None else proto.DayOfWeek(int(value))


_PROTO_ORDER_STATUS = {
    proto.ProtoOrderStatus.ACCEPTED: OrderStatus.ACCEPTED,
    proto.ProtoOrderStatus.FILLED: OrderStatus.FILLED,
    proto.ProtoOrderStatus.REJECTED: OrderStatus.REJECTED,
    proto.ProtoOrderStatus.EXPIRED: OrderStatus.CANCELLED,
    proto.ProtoOrderStatus.CANCELLED: OrderStatus.CANCELLED,
}
_EXECUTION_STATUS = {
    proto.ExecutionType.ORDER_ACCEPTED: OrderStatus.ACCEPTED,
    proto.ExecutionType.ORDER_FILLED: OrderStatus.FILLED,
    proto.ExecutionType.ORDER_PARTIAL_FILL: OrderStatus.PARTIALLY_FILLED,
    proto.ExecutionType.ORDER_REJECTED: OrderStatus.REJECTED,
    proto.ExecutionType.ORDER_CANCELLED: OrderStatus.CANCELLED,
    proto.ExecutionType.ORDER_EXPIRED: OrderStatus.CANCELLED,
}


def fill_from_deal(deal: Mapping[str, Any], client_order_id: str, symbol_name: str) -> Fill:
    return Fill(
        broker_fill_id=str(deal["dealId"]),
        client_order_id=client_order_id,
        symbol=symbol_name,
        side=proto.TradeSide(int(deal["tradeSide"])).to_side(),
        quantity=proto.volume_to_units(int(deal["filledVolume"])),
        price=float(deal["executionPrice"]),
        fee=abs(proto.money_from_protocol(deal.get("commission"), deal.get("moneyDigits"))),
        filled_at=_timestamp(deal.get("executionTimestamp")),
    )


def order_result_from_history(
    client_order_id: str,
    order: Mapping[str, Any],
    deals: Iterable[Mapping[str, Any]],
    symbol_name: str,
) -> OrderResult:
    """What the server's order and deal history says became of one order."""
    order_id = order.get("orderId")
    fills = tuple(
        fill_from_deal(deal, client_order_id, symbol_name)
        for deal in deals
        if deal.get("orderId") == order_id and int(deal.get("filledVolume", 0)) > 0
    )
    status = _PROTO_ORDER_STATUS.get(int(order.get("orderStatus", 0)), OrderStatus.UNKNOWN)
    if status is OrderStatus.ACCEPTED and fills:
        status = OrderStatus.PARTIALLY_FILLED
    return OrderResult(client_order_id, status, None if order_id is None else str(order_id), fills)


def net_positions(
    positions: Iterable[Mapping[str, Any]], symbol_names: Mapping[int, str]
) -> tuple[Position, ...]:
    """Open cTrader positions (one per fill on hedged accounts) -> one signed net position per symbol."""
    by_symbol: dict[str, list[tuple[float, float]]] = {}
    for position in positions:
        if int(position.get("positionStatus", proto.PositionStatus.OPEN)) != proto.PositionStatus.OPEN:
            continue
        trade = position["tradeData"]
        symbol_id = int(trade["symbolId"])
        name = symbol_names.get(symbol_id, f"symbol:{symbol_id}")
        sign = proto.TradeSide(int(trade["tradeSide"])).to_side().sign
        units = sign * proto.volume_to_units(int(trade["volume"]))
        by_symbol.setdefault(name, []).append((units, float(position.get("price", 0.0))))
    netted = []
    for name, legs in sorted(by_symbol.items()):
        quantity = sum(units for units, _ in legs)
        same_side = [(abs(units), price) for units, price in legs if units * quantity > 0]
        weight = sum(units for units, _ in same_side)
        average = sum(units * price for units, price in same_side) / weight if weight else None
        netted.append(Position(name, quantity, average))
    return tuple(netted)


class _OrderTracker:
    """Everything the server has said about one client order id in this process."""

    def __init__(self, request: OrderRequest) -> None:
        self.request = request
        self.broker_order_id: str | None = None
        self.status = OrderStatus.PENDING
        self.fills: dict[str, Fill] = {}
        self.reason: str | None = None
        self.error: CTraderApiError | None = None
        self.connection_lost = False
        self.settled = asyncio.Event()

    def arm(self) -> None:
        self.error = None
        self.connection_lost = False
        self.settled = asyncio.Event()

    def on_execution(self, payload: Mapping[str, Any]) -> None:
        order = payload.get("order") or {}
        if order.get("orderId") is not None:
            self.broker_order_id = str(order["orderId"])
        deal = payload.get("deal")
        if deal and int(deal.get("filledVolume", 0)) > 0:
            fill = fill_from_deal(deal, self.request.client_order_id, self.request.symbol)
            self.fills[fill.broker_fill_id] = fill
        try:
            status = _EXECUTION_STATUS[proto.ExecutionType(int(payload["executionType"]))]
        except (KeyError, ValueError):
            return
        if status is not OrderStatus.ACCEPTED or not self.acknowledged:
            self.status = status
        if status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
            self.reason = str(
                payload.get("errorCode") or proto.ExecutionType(int(payload["executionType"])).name
            )
        if status.is_terminal:
            self.settled.set()

    @property
    def acknowledged(self) -> bool:
        return self.status not in (OrderStatus.PENDING, OrderStatus.SUBMITTED)

    def on_error(self, error: CTraderApiError) -> None:
        self.error = error
        self.settled.set()

    def on_connection_lost(self) -> None:
        self.connection_lost = True
        self.settled.set()

    def adopt(self, result: OrderResult) -> None:
        self.status = result.status
        self.broker_order_id = result.broker_order_id or self.broker_order_id
        for fill in result.fills:
            self.fills[fill.broker_fill_id] = fill

    def result(self) -> OrderResult:
        return OrderResult(
            self.request.client_order_id,
            self.status,
            self.broker_order_id,
            tuple(self.fills.values()),
            self.reason,
        )


class CTraderClient:
    """One connection to one account. Create and use it inside a single event loop."""

    def __init__(self, config: CTraderConfig, token_provider: AccessTokenProvider) -> None:
        self.config = config
        self.stats = CTraderClientStats()
        self._tokens = token_provider
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._pending: dict[str, asyncio.Future[proto.Frame]] = {}
        self._order_messages: dict[str, _OrderTracker] = {}  # clientMsgId of a NewOrder -> its order
        self._orders: dict[str, _OrderTracker] = {}  # client order id -> order
        self._connect_lock = asyncio.Lock()
        self._account_lock = asyncio.Lock()
        self._account_token: str | None = None  # the token the current account session was authorised with
        self._account_authorized = False
        self._message_ids = itertools.count(1)
        self._pacer = _Pacer(config.max_requests_per_second)
        self._history_pacer = _Pacer(config.max_history_requests_per_second)
        self._spot_collectors: set[_SpotCollector] = set()
        self._symbol_ids: dict[str, int] | None = None
        self._symbol_names: dict[int, str] = {}
        self._symbols: dict[str, CTraderSymbol] = {}

    # ----- connection ----
    @property
    def is_connected(self) -> bool:
        return self._ws is not None and self._reader is not None and not self._reader.done()

    async def connect(self) -> None:
        """Connect and authorise the application and the account (idempotent)."""
        await self._ensure_account()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await self._teardown()

    async def _ensure_connected(self) -> None:
        if self.is_connected:
            return
        async with self._connect_lock:
            if self.is_connected:
                return
            delay = self.config.reconnect_initial_delay_s
            last_error: Exception | None = None
            for attempt in range(1, self.config.max_reconnect_attempts + 1):
                try:
                    await self._open_session()
                    return
                except BrokerAuthError:
                    await self._teardown()
                    raise
                except (
                    OSError,
                    TimeoutError,
                    InvalidHandshake,
                    ConnectionClosed,
                    _ConnectionLostError,
                    CTraderApiError,
                ) as exc:
                    last_error = exc
                    await self._teardown()
                    log.warning("cTrader connection attempt %d failed: %s", attempt, exc)
                    if attempt < self.config.max_reconnect_attempts:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, self.config.reconnect_max_delay_s)
            raise BrokerConnectionError(
                f"could not connect to {self.config.url} after {self.config.max_reconnect_attempts} attempts "
                f"({last_error}); check the network and host, then reconcile any order in flight"
            )

    async def _open_session(self) -> None:
        secure = self.config.url.startswith("wss://")
        options: dict[str, Any] = {"ssl": ssl.create_default_context()} if secure else {"proxy": None}
        try:
            self._ws = await connect(
                self.config.url,
                ping_interval=None,  # the protocol has its own heartbeat
                compression=None,
                open_timeout=self.config.request_timeout_s,
                close_timeout=1.0,
                max_size=16 * 2**20,
                **options,
            )
        except InvalidURI as exc:
            raise CTraderConfigError(f"cTrader url {self.config.url!r} is invalid: {exc}") from exc
        self.stats.connections += 1
        self._account_authorized = False
        self._reader = asyncio.create_task(self._read_loop(self._ws))
        if self.config.heartbeat_interval_s:
            self._heartbeat = asyncio.create_task(
                self._heartbeat_loop(self._ws, self.config.heartbeat_interval_s)
            )
        try:
            await self._request(
                proto.PayloadType.APPLICATION_AUTH_REQ,
                {"clientId": self.config.client_id, "clientSecret": self.config.client_secret},
            )
        except CTraderApiError as exc:
            if exc.code == proto.CH_CLIENT_AUTH_FAILURE:
                raise BrokerAuthError(
                    f"cTrader rejected the application credentials ({exc.code}); check CTRADER_CLIENT_ID and "
                    "CTRADER_CLIENT_SECRET and that the application is activated"
                ) from exc
            raise

    async def _teardown(self) -> None:
        ws, self._ws = self._ws, None
        self._account_authorized = False
        for task in (self._heartbeat, self._reader):
            if task is not None and not task.done():
                task.cancel()
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in (self._heartbeat, self._reader):
            if task is not None:
                with contextlib.suppress(BaseException):
                    await task
        self._heartbeat = self._reader = None
        self._fail_in_flight()

    def _fail_in_flight(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    _ConnectionLostError("connection to cTrader lost before the answer arrived")
                )
        for tracker in self._order_messages.values():
            tracker.on_connection_lost()

    async def _read_loop(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    frame = proto.decode_frame(raw)
                except proto.MalformedFrameError as exc:
                    log.warning("ignoring a malformed frame from cTrader: %s", exc)
                    continue
                self._dispatch(frame)
        except ConnectionClosed:
            pass
        finally:
            if self._ws is ws:
                self._ws = None
                self._account_authorized = False
                if self._heartbeat is not None:
                    self._heartbeat.cancel()
            self._fail_in_flight()

    async def _heartbeat_loop(self, ws: ClientConnection, interval_s: float) -> None:
        heartbeat = proto.encode_frame(proto.PayloadType.HEARTBEAT_EVENT, {})
        while True:
            await asyncio.sleep(interval_s)
            try:
                await ws.send(heartbeat)
            except ConnectionClosed:
                return

    def _dispatch(self, frame: proto.Frame) -> None:
        payload_type, payload, msg_id = frame.payload_type, frame.payload, frame.client_msg_id
        if payload_type == proto.PayloadType.HEARTBEAT_EVENT:
            return
        if payload_type == proto.PayloadType.SPOT_EVENT:
            for collector in self._spot_collectors:
                collector.on_spot(payload)
            return
        if payload_type == proto.PayloadType.EXECUTION_EVENT:
            client_order_id = (payload.get("order") or {}).get("clientOrderId")
            tracker = self._orders.get(client_order_id) if client_order_id else None
            tracker = tracker or (self._order_messages.get(msg_id) if msg_id else None)
            if tracker is not None:
                tracker.on_execution(payload)
            return
        if payload_type == proto.PayloadType.ORDER_ERROR_EVENT or (
            payload_type in (proto.PayloadType.OA_ERROR_RES, proto.PayloadType.ERROR_RES)
            and msg_id in self._order_messages
        ):
            tracker = self._order_messages.get(msg_id) if msg_id else None
            if tracker is not None:
                tracker.on_error(CTraderApiError.from_payload(payload))
            else:
                log.warning("cTrader order error without a known order: %s", payload.get("errorCode"))
            return
        if payload_type in (
            proto.PayloadType.ACCOUNTS_TOKEN_INVALIDATED_EVENT,
            proto.PayloadType.ACCOUNT_DISCONNECT_EVENT,
        ):
            accounts = payload.get("ctidTraderAccountIds") or [payload.get("ctidTraderAccountId")]
            if self.config.account_id in {int(a) for a in accounts if a is not None}:
                log.info("cTrader ended the account session (%s); re-authorising", payload.get("reason", ""))
                self._account_authorized = False
                stale = self._account_token
                self._spawn(self._reauthorize_account(stale))
            return
        if payload_type == proto.PayloadType.CLIENT_DISCONNECT_EVENT:
            log.warning("cTrader is disconnecting this client: %s", payload.get("reason", ""))
            return
        future = self._pending.get(msg_id) if msg_id else None
        if future is not None and not future.done():
            future.set_result(frame)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("cTrader background re-authorisation failed: %s", task.exception())

    # ----- sending ----
    async def _send(self, payload_type: int, payload: dict[str, Any], msg_id: str | None) -> None:
        if payload_type == proto.PayloadType.GET_TRENDBARS_REQ:
            await self._history_pacer.wait()
        await self._pacer.wait()
        ws = self._ws
        if ws is None:
            raise _ConnectionLostError("not connected to cTrader")
        try:
            await ws.send(proto.encode_frame(payload_type, payload, msg_id))
        except ConnectionClosed as exc:
            raise _ConnectionLostError(f"connection to cTrader closed while sending: {exc}") from exc

    async def _request(self, payload_type: int, payload: dict[str, Any]) -> proto.Frame:
        """One request, one answer, on the current connection; no retries."""
        msg_id = f"m{next(self._message_ids)}"
        future: asyncio.Future[proto.Frame] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            await self._send(payload_type, payload, msg_id)
            frame = await asyncio.wait_for(future, self.config.request_timeout_s)
        except TimeoutError as exc:
            await self._teardown()  # a silent connection is a dead one
            raise _ConnectionLostError(
                f"no answer to payloadType {payload_type} within {self.config.request_timeout_s} s"
            ) from exc
        finally:
            self._pending.pop(msg_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # marks a connection-lost failure as seen when sending failed first
        if frame.payload_type in (proto.PayloadType.OA_ERROR_RES, proto.PayloadType.ERROR_RES):
            raise CTraderApiError.from_payload(frame.payload)
        return frame

    def _hold_sends(self, error: CTraderApiError) -> None:
        """BLOCKED_PAYLOAD_TYPE: stop sending anything until the server's retryAfter has passed."""
        self.stats.rate_limit_backoffs += 1
        pause = error.retry_after_s if error.retry_after_s is not None else 1.0
        self._pacer.hold(pause)
        log.warning("cTrader rate limit hit; pausing requests for %.1f s", pause)

    async def _call(self, payload_type: int, payload: dict[str, Any]) -> proto.Frame:
        """An idempotent account request, repeated across rate limits, token expiry and reconnects."""
        rate_retries = 0
        reauthorised = False
        connection_retries = 0
        while True:
            try:
                await self._ensure_account()
                return await self._request(payload_type, payload)
            except CTraderApiError as exc:
                if (
                    exc.code == proto.BLOCKED_PAYLOAD_TYPE
                    and rate_retries < self.config.max_rate_limit_retries
                ):
                    rate_retries += 1
                    self._hold_sends(exc)
                    continue
                if exc.code in proto.TOKEN_ERROR_CODES and not reauthorised:
                    reauthorised = True
                    await self._reauthorize_account(self._account_token)
                    continue
                if exc.code == proto.ACCOUNT_NOT_AUTHORIZED and not reauthorised:
                    reauthorised = True  # the session lost its account (e.g. 2164): plain account auth again
                    self._account_authorized = False
                    continue
                raise
            except _ConnectionLostError:
                connection_retries += 1
                if connection_retries > self.config.max_reconnect_attempts:
                    raise
                await asyncio.sleep(self._reconnect_delay(connection_retries))

    def _reconnect_delay(self, attempt: int) -> float:
        return min(
            self.config.reconnect_initial_delay_s * 2 ** (attempt - 1), self.config.reconnect_max_delay_s
        )

    # ----- account authorisation ----
    async def _ensure_account(self) -> None:
        await self._ensure_connected()
        if self._account_authorized:
            return
        async with self._account_lock:
            if self._account_authorized and self.is_connected:
                return
            token = await asyncio.to_thread(self._tokens.get_access_token)
            await self._authorize_account(token)

    async def _reauthorize_account(self, stale_token: str | None) -> None:
        """After CH_ACCESS_TOKEN_INVALID or 2147: pick up a newer token (or refresh), then account auth."""
        await self._ensure_connected()
        async with self._account_lock:
            if self._account_authorized and self._account_token != stale_token and self.is_connected:
                return  # someone else already re-authorised with a newer token
            self._account_authorized = False
            token = await self._newer_token(stale_token)
            await self._authorize_account(token)

    async def _newer_token(self, stale_token: str | None) -> str:
        token = await asyncio.to_thread(self._tokens.get_access_token)
        if token == stale_token:
            token = await asyncio.to_thread(self._tokens.force_refresh, token)
            self.stats.token_refreshes += 1
        return token

    async def _authorize_account(self, token: str) -> None:
        """Account auth with one token retry; caller holds the account lock."""
        for attempt in (1, 2):
            try:
                await self._request(
                    proto.PayloadType.ACCOUNT_AUTH_REQ,
                    {"ctidTraderAccountId": self.config.account_id, "accessToken": token},
                )
            except CTraderApiError as exc:
                if exc.code == proto.ALREADY_LOGGED_IN:
                    pass  # the session is authorised already; the server says so
                elif exc.code in proto.TOKEN_ERROR_CODES and attempt == 1:
                    token = await self._newer_token(token)
                    continue
                elif exc.code in proto.TOKEN_ERROR_CODES:
                    raise BrokerAuthError(
                        f"cTrader refused the access token even after a refresh ({exc.code}); the token "
                        "store needs a person to re-authorise (emp token authorize)"
                    ) from exc
                elif exc.code == proto.BLOCKED_PAYLOAD_TYPE:
                    self._hold_sends(exc)
                    continue
                else:
                    raise BrokerAuthError(
                        f"cTrader refused account {self.config.account_id} ({exc.code}: {exc.description}); "
                        "check the account id, and that it lives on this host (demo vs live)"
                    ) from exc
            self._account_token = token
            self._account_authorized = True
            self.stats.account_auths += 1
            return

    # ----- symbols ----
    async def _load_symbol_names(self) -> dict[str, int]:
        if self._symbol_ids is None:
            frame = await self._call(
                proto.PayloadType.SYMBOLS_LIST_REQ,
                {"ctidTraderAccountId": self.config.account_id, "includeArchivedSymbols": False},
            )
            symbols = frame.payload.get("symbol", [])
            self._symbol_ids = {
                str(s["symbolName"]): int(s["symbolId"]) for s in symbols if "symbolName" in s
            }
            self._symbol_names = {symbol_id: name for name, symbol_id in self._symbol_ids.items()}
        return self._symbol_ids

    async def symbol(self, name: str) -> CTraderSymbol:
        """Symbol details (digits, volumes in cents) by the broker's symbol name, cached per client."""
        if name in self._symbols:
            return self._symbols[name]
        symbol_ids = await self._load_symbol_names()
        if name not in symbol_ids:
            known = ", ".join(sorted(symbol_ids)[:10])
            raise SymbolNotFoundError(
                f"cTrader account {self.config.account_id} has no symbol {name!r} (some known: {known}); "
                "map the instrument to the broker's symbol name"
            )
        frame = await self._call(
            proto.PayloadType.SYMBOL_BY_ID_REQ,
            {"ctidTraderAccountId": self.config.account_id, "symbolId": [symbol_ids[name]]},
        )
        detail = frame.payload["symbol"][0]
        symbol = CTraderSymbol(
            symbol_id=int(detail["symbolId"]),
            name=name,
            digits=int(detail["digits"]),
            pip_position=int(detail["pipPosition"]),
            lot_size=detail.get("lotSize"),
            min_volume=detail.get("minVolume"),
            max_volume=detail.get("maxVolume"),
            step_volume=detail.get("stepVolume"),
            swap_long=_optional_float(detail.get("swapLong")),
            swap_short=_optional_float(detail.get("swapShort")),
            swap_rollover_3days=_optional_weekday(detail.get("swapRollover3Days")),
            swap_calculation_type=detail.get("swapCalculationType"),
        )
        self._symbols[name] = symbol
        return symbol

    # ----- market data ----
    async def trendbars(
        self, name: str, period: proto.TrendbarPeriod, from_ms: int, to_ms: int
    ) -> tuple[proto.Trendbar, ...]:
        """Every bar of `name` that opened in from_ms..to_ms (inclusive, Unix ms), oldest first, each once.

        The range is cut into the widest windows the server accepts; a window answered with `hasMore` is
        split around the bars that came back and the parts not yet covered are asked for next, whichever
        end of the window the server chose to send. The request queue and the bars received live here,
        outside the connection, so a disconnect (repaired by `_call`: reconnect, application and account
        auth) resumes with the window that was cut off; bars are keyed by open time, so none repeats.
        """
        symbol = await self.symbol(name)
        spacing = proto.MIN_BAR_SPACING_MS[period]
        pending = deque(proto.trendbar_windows(period, from_ms, to_ms))
        bars: dict[int, proto.Trendbar] = {}
        while pending:
            low, high = pending.popleft()
            self.stats.trendbar_requests += 1
            frame = await self._call(
                proto.PayloadType.GET_TRENDBARS_REQ,
                {
                    "ctidTraderAccountId": self.config.account_id,
                    "symbolId": symbol.symbol_id,
                    "period": int(period),
                    "fromTimestamp": low,
                    "toTimestamp": high,
                },
            )
            decoded = (proto.decode_trendbar(raw, symbol.digits) for raw in frame.payload.get("trendbar", []))
            page = [bar for bar in decoded if low <= bar.open_time_ms <= high]
            bars.update((bar.open_time_ms, bar) for bar in page)
            if not frame.payload.get("hasMore"):
                continue
            if not page:
                raise CTraderApiError(
                    "EMPTY_PAGE", f"{name} {period.name}: hasMore but no bar in {low}..{high}; cannot page on"
                )
            first = min(bar.open_time_ms for bar in page)
            last = max(bar.open_time_ms for bar in page)
            rest = []
            if first - low >= spacing:
                rest.append((low, first - 1))
            if high - last >= spacing:
                rest.append((last + 1, high))
            pending.extendleft(reversed(rest))
        return tuple(bars[open_time] for open_time in sorted(bars))

    async def sample_spreads(
        self, names: Sequence[str], *, duration_s: float = 0.0, timeout_s: float = 10.0
    ) -> dict[str, SpreadSample]:
        """Subscribe to the symbols' spot prices, collect quotes, unsubscribe.

        Returns as soon as every symbol has a bid and an ask (the server sends the latest prices right after
        subscribing, even with the market closed), or after `duration_s` to see the spread move.
        """
        symbols = [await self.symbol(name) for name in dict.fromkeys(names)]
        by_id = {symbol.symbol_id: symbol for symbol in symbols}
        collector = _SpotCollector(by_id, {symbol_id: s.digits for symbol_id, s in by_id.items()})
        account = {"ctidTraderAccountId": self.config.account_id, "symbolId": list(by_id)}
        self._spot_collectors.add(collector)
        try:
            await self._call_tolerating(
                proto.PayloadType.SUBSCRIBE_SPOTS_REQ,
                {**account, "subscribeToSpotTimestamp": True},
                proto.ALREADY_SUBSCRIBED,
            )
            try:
                await asyncio.wait_for(collector.complete.wait(), timeout_s)
            except TimeoutError:
                silent = [by_id[sid].name for sid, quotes in collector.quotes.items() if not quotes]
                raise BrokerError(
                    f"no bid and ask from cTrader within {timeout_s} s for {', '.join(silent)}; "
                    "the symbol may be disabled for this account"
                ) from None
            if duration_s > 0:
                await asyncio.sleep(duration_s)
        finally:
            self._spot_collectors.discard(collector)
            if self.is_connected:
                with contextlib.suppress(BrokerError):
                    await self._call_tolerating(
                        proto.PayloadType.UNSUBSCRIBE_SPOTS_REQ, account, proto.NOT_SUBSCRIBED_TO_SPOTS
                    )
        return {
            symbol.name: SpreadSample(
                symbol.name, symbol.digits, symbol.pip_position, tuple(collector.quotes[symbol.symbol_id])
            )
            for symbol in symbols
        }

    async def _call_tolerating(self, payload_type: int, payload: dict[str, Any], harmless: str) -> None:
        """A call whose one error code means the wanted state already holds (e.g. already subscribed)."""
        try:
            await self._call(payload_type, payload)
        except CTraderApiError as exc:
            if exc.code != harmless:
                raise

    # ----- orders ----
    async def submit_order(self, request: OrderRequest) -> OrderResult:
        """Send a market order once and wait for it to fill, be rejected, or for the wait to run out.

        A client order id this process already sent, or (with check_before_submit) one the server's history
        knows, is answered from what the server says, never sent again.
        """
        known = self._orders.get(request.client_order_id)
        if known is not None and known.acknowledged:
            return await self.order_status(request.client_order_id)
        if known is not None or self.config.check_before_submit:
            since = _now_ms() - int(self.config.order_lookback_s * 1000)
            existing = (await self._find_orders([request.client_order_id], since))[request.client_order_id]
            if existing.status is not OrderStatus.NOT_FOUND:
                if known is not None:
                    known.adopt(existing)
                return existing
        return await self._place(request)

    def _new_order_payload(self, request: OrderRequest, symbol: CTraderSymbol) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "ctidTraderAccountId": self.config.account_id,
            "symbolId": symbol.symbol_id,
            "orderType": proto.ProtoOrderType.MARKET,
            "tradeSide": proto.TradeSide.from_side(request.side),
            "volume": proto.units_to_volume(request.quantity),
            "clientOrderId": request.client_order_id,
        }
        if request.label is not None:
            payload["label"] = request.label
        if request.relative_stop_loss is not None:
            payload["relativeStopLoss"] = proto.relative_distance_to_protocol(
                request.relative_stop_loss, symbol.digits
            )
        if request.relative_take_profit is not None:
            payload["relativeTakeProfit"] = proto.relative_distance_to_protocol(
                request.relative_take_profit, symbol.digits
            )
        return payload

    async def _place(self, request: OrderRequest) -> OrderResult:
        symbol = await self.symbol(request.symbol)
        payload = self._new_order_payload(request, symbol)
        tracker = _OrderTracker(request)
        self._orders[request.client_order_id] = tracker
        first_sent_ms = _now_ms()
        rate_retries = 0
        reauthorised = False
        losses = 0
        while True:
            await self._ensure_account()
            msg_id = f"o{next(self._message_ids)}"
            tracker.arm()
            self._order_messages[msg_id] = tracker
            try:
                self.stats.orders_sent += 1
                await self._send(proto.PayloadType.NEW_ORDER_REQ, payload, msg_id)
                if not tracker.acknowledged:
                    tracker.status = OrderStatus.SUBMITTED
                await asyncio.wait_for(tracker.settled.wait(), self.config.fill_timeout_s)
            except _ConnectionLostError:
                tracker.connection_lost = True
            except TimeoutError:
                if tracker.acknowledged:
                    return tracker.result()  # accepted, not yet filled: order_status() later
                found = await self._find_orders(
                    [request.client_order_id], first_sent_ms - _RECONCILE_WINDOW_MARGIN_MS
                )
                result = found[request.client_order_id]
                if result.status is not OrderStatus.NOT_FOUND:
                    tracker.adopt(result)
                    return tracker.result()
                tracker.status = OrderStatus.UNKNOWN
                return OrderResult(
                    request.client_order_id,
                    OrderStatus.UNKNOWN,
                    reason=f"no answer within {self.config.fill_timeout_s} s and not in the order history "
                    "yet; reconcile before resubmitting",
                )
            finally:
                self._order_messages.pop(msg_id, None)

            if tracker.connection_lost:
                losses += 1
                if losses > self.config.max_reconnect_attempts:
                    raise BrokerConnectionError(
                        f"order {request.client_order_id}: connection lost {losses} times; its state is "
                        "unknown, reconcile before resubmitting"
                    )
                await self._ensure_account()
                if self.config.reconcile_settle_s:
                    await asyncio.sleep(self.config.reconcile_settle_s)
                since = first_sent_ms - _RECONCILE_WINDOW_MARGIN_MS
                result = (await self._find_orders([request.client_order_id], since))[request.client_order_id]
                if result.status is not OrderStatus.NOT_FOUND:
                    self.stats.orders_found_after_disconnect += 1
                    tracker.adopt(result)
                    return tracker.result()
                self.stats.orders_resent_after_proof_of_absence += 1
                log.info("order %s provably absent after a disconnect; resending", request.client_order_id)
                continue

            error = tracker.error
            if error is None:
                return tracker.result()
            if error.code == proto.BLOCKED_PAYLOAD_TYPE and rate_retries < self.config.max_rate_limit_retries:
                rate_retries += 1
                self._hold_sends(error)
                continue
            if error.code in proto.TOKEN_ERROR_CODES and not reauthorised:
                reauthorised = True  # refused before processing: resending cannot duplicate
                await self._reauthorize_account(self._account_token)
                continue
            if (
                error.code in (proto.ACCOUNT_NOT_AUTHORIZED, proto.CH_CLIENT_NOT_AUTHENTICATED)
                and not reauthorised
            ):
                reauthorised = True
                self._account_authorized = False
                continue
            tracker.status = OrderStatus.REJECTED
            tracker.reason = f"{error.code}: {error.description}" if error.description else error.code
            return tracker.result()

    async def order_status(self, client_order_id: str) -> OrderResult:
        tracker = self._orders.get(client_order_id)
        if tracker is not None and (tracker.status.is_terminal or tracker.error is not None):
            return tracker.result()
        since = _now_ms() - int(self.config.order_lookback_s * 1000)
        result = (await self._find_orders([client_order_id], since))[client_order_id]
        if tracker is not None and result.status is not OrderStatus.NOT_FOUND:
            tracker.adopt(result)
            return tracker.result()
        return result

    # ----- reconciliation ----
    async def _find_orders(self, client_order_ids: Sequence[str], since_ms: int) -> dict[str, OrderResult]:
        """Reconcile (open positions, pending orders), then order and deal history, by clientOrderId."""
        results = {coid: OrderResult(coid, OrderStatus.NOT_FOUND) for coid in client_order_ids}
        if not client_order_ids:
            return results
        wanted = set(client_order_ids)
        await self._load_symbol_names()
        account = {"ctidTraderAccountId": self.config.account_id}
        reconcile = await self._call(proto.PayloadType.RECONCILE_REQ, account)
        window = {
            **account,
            "fromTimestamp": max(since_ms, 0),
            "toTimestamp": _now_ms() + _RECONCILE_WINDOW_MARGIN_MS,
        }
        history = await self._call(proto.PayloadType.ORDER_LIST_REQ, window)
        orders: dict[str, Mapping[str, Any]] = {}
        for order in [*history.payload.get("order", []), *reconcile.payload.get("order", [])]:
            coid = order.get("clientOrderId")
            if coid in wanted:
                orders.setdefault(coid, order)  # history first: it carries the final status
        if not orders:
            return results
        deals = (await self._call(proto.PayloadType.DEAL_LIST_REQ, window)).payload.get("deal", [])
        for coid, order in orders.items():
            symbol_id = int(order.get("tradeData", {}).get("symbolId", 0))
            name = self._symbol_names.get(symbol_id, f"symbol:{symbol_id}")
            tracker = self._orders.get(coid)
            if tracker is not None:
                name = tracker.request.symbol
            results[coid] = order_result_from_history(coid, order, deals, name)
        return results

    async def positions(self) -> tuple[Position, ...]:
        names = await self._load_symbol_names()
        frame = await self._call(
            proto.PayloadType.RECONCILE_REQ, {"ctidTraderAccountId": self.config.account_id}
        )
        return net_positions(frame.payload.get("position", []), {v: k for k, v in names.items()})

    async def reconcile(self, client_order_ids: Sequence[str] = ()) -> ReconcileReport:
        since = _now_ms() - int(self.config.order_lookback_s * 1000)
        orders = await self._find_orders(list(client_order_ids), since)
        return ReconcileReport(await self.positions(), orders)
