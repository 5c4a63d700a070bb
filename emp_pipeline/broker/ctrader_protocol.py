"""cTrader Open API over JSON: payload types, enums, error codes and unit conversions.

Numbers come from Spotware's proto definitions (github.com/spotware/openapi-proto-messages). Kept free of I/O
so the conversions, where real money is lost to an off-by-100, are unit tested on their own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from emp_pipeline.broker.interface import InvalidOrderError, OrderSide

RELATIVE_PRICE_SCALE = 100_000  # relative stops and spot prices are integers in 1/100000 of a price unit
VOLUME_SCALE = 100  # volumes are in cents of a unit


class PayloadType(IntEnum):
    HEARTBEAT_EVENT = 51
    ERROR_RES = 50  # common-layer error; the OA layer normally answers with OA_ERROR_RES
    APPLICATION_AUTH_REQ = 2100
    APPLICATION_AUTH_RES = 2101
    ACCOUNT_AUTH_REQ = 2102
    ACCOUNT_AUTH_RES = 2103
    NEW_ORDER_REQ = 2106
    SYMBOLS_LIST_REQ = 2114
    SYMBOLS_LIST_RES = 2115
    SYMBOL_BY_ID_REQ = 2116
    SYMBOL_BY_ID_RES = 2117
    RECONCILE_REQ = 2124
    RECONCILE_RES = 2125
    EXECUTION_EVENT = 2126
    ORDER_ERROR_EVENT = 2132
    DEAL_LIST_REQ = 2133
    DEAL_LIST_RES = 2134
    OA_ERROR_RES = 2142
    ACCOUNTS_TOKEN_INVALIDATED_EVENT = 2147
    CLIENT_DISCONNECT_EVENT = 2148
    GET_ACCOUNTS_BY_ACCESS_TOKEN_REQ = 2149
    GET_ACCOUNTS_BY_ACCESS_TOKEN_RES = 2150
    ACCOUNT_DISCONNECT_EVENT = 2164
    ORDER_LIST_REQ = 2175
    ORDER_LIST_RES = 2176
    # market data
    SUBSCRIBE_SPOTS_REQ = 2127
    SUBSCRIBE_SPOTS_RES = 2128
    UNSUBSCRIBE_SPOTS_REQ = 2129
    UNSUBSCRIBE_SPOTS_RES = 2130
    SPOT_EVENT = 2131
    GET_TRENDBARS_REQ = 2137
    GET_TRENDBARS_RES = 2138


class ExecutionType(IntEnum):
    ORDER_ACCEPTED = 2
    ORDER_FILLED = 3
    ORDER_REPLACED = 4
    ORDER_CANCELLED = 5
    ORDER_EXPIRED = 6
    ORDER_REJECTED = 7
    ORDER_CANCEL_REJECTED = 8
    ORDER_PARTIAL_FILL = 11


class ProtoOrderType(IntEnum):
    MARKET = 1
    LIMIT = 2
    STOP = 3


class TradeSide(IntEnum):
    BUY = 1
    SELL = 2

    @classmethod
    def from_side(cls, side: OrderSide) -> TradeSide:
        return cls.BUY if side is OrderSide.BUY else cls.SELL

    def to_side(self) -> OrderSide:
        return OrderSide.BUY if self is TradeSide.BUY else OrderSide.SELL


class ProtoOrderStatus(IntEnum):
    ACCEPTED = 1
    FILLED = 2
    REJECTED = 3
    EXPIRED = 4
    CANCELLED = 5


class PositionStatus(IntEnum):
    OPEN = 1
    CLOSED = 2
    CREATED = 3
    ERROR = 4


class TrendbarPeriod(IntEnum):
    """ProtoOATrendbarPeriod: the bar sizes the venue keeps history for."""

    M1 = 1
    M2 = 2
    M3 = 3
    M4 = 4
    M5 = 5
    M10 = 6
    M15 = 7
    M30 = 8
    H1 = 9
    H4 = 10
    H12 = 11
    D1 = 12
    W1 = 13
    MN1 = 14


class DayOfWeek(IntEnum):
    """ProtoOADayOfWeek, as in `swapRollover3Days` (the weekday a position is charged three nights)."""

    NONE = 0
    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7


_MINUTE_MS = 60_000
_HOUR_MS = 60 * _MINUTE_MS
_DAY_MS = 24 * _HOUR_MS
_FIXED_PERIOD_MINUTES = {
    "M1": 1,
    "M2": 2,
    "M3": 3,
    "M4": 4,
    "M5": 5,
    "M10": 10,
    "M15": 15,
    "M30": 30,
    "H1": 60,
}

# The widest fromTimestamp..toTimestamp the server accepts per request (wider gets INCORRECT_BOUNDARIES).
# Figures as Spotware's proto comments and SDKs give them; the M1-M5 limit is described there as "5 weeks"
# but written as 302,400,000 ms (3.5 days): the smaller reading is used, it is always accepted.
_M5_WINDOW_MS = 302_400_000
_H1_WINDOW_MS = 21_168_000_000
_D1_WINDOW_MS = 31_622_400_000
_MN1_WINDOW_MS = 158_112_000_000
MAX_TRENDBAR_WINDOW_MS: dict[TrendbarPeriod, int] = {
    **{TrendbarPeriod[name]: _M5_WINDOW_MS for name in ("M1", "M2", "M3", "M4", "M5")},
    **{TrendbarPeriod[name]: _H1_WINDOW_MS for name in ("M10", "M15", "M30", "H1")},
    **{TrendbarPeriod[name]: _D1_WINDOW_MS for name in ("H4", "H12", "D1")},
    **{TrendbarPeriod[name]: _MN1_WINDOW_MS for name in ("W1", "MN1")},
}

# The least time between two bars' open times. Bars from H4 up follow the broker's day boundary, which moves
# with daylight saving (a "day" can be 23 hours), and months are as short as 28 days: one hour is taken off
# those, so a gap shorter than this provably holds no bar and need not be asked for.
MIN_BAR_SPACING_MS: dict[TrendbarPeriod, int] = {
    **{TrendbarPeriod[name]: minutes * _MINUTE_MS for name, minutes in _FIXED_PERIOD_MINUTES.items()},
    TrendbarPeriod.H4: 3 * _HOUR_MS,
    TrendbarPeriod.H12: 11 * _HOUR_MS,
    TrendbarPeriod.D1: 23 * _HOUR_MS,
    TrendbarPeriod.W1: 7 * _DAY_MS - _HOUR_MS,
    TrendbarPeriod.MN1: 28 * _DAY_MS - _HOUR_MS,
}


# Error codes (strings on the wire).
BLOCKED_PAYLOAD_TYPE = "BLOCKED_PAYLOAD_TYPE"
CH_CLIENT_AUTH_FAILURE = "CH_CLIENT_AUTH_FAILURE"
CH_CLIENT_NOT_AUTHENTICATED = "CH_CLIENT_NOT_AUTHENTICATED"
CH_ACCESS_TOKEN_INVALID = "CH_ACCESS_TOKEN_INVALID"
OA_AUTH_TOKEN_EXPIRED = "OA_AUTH_TOKEN_EXPIRED"
ALREADY_LOGGED_IN = "ALREADY_LOGGED_IN"
ACCOUNT_NOT_AUTHORIZED = "ACCOUNT_NOT_AUTHORIZED"
ALREADY_SUBSCRIBED = "ALREADY_SUBSCRIBED"
NOT_SUBSCRIBED_TO_SPOTS = "NOT_SUBSCRIBED_TO_SPOTS"
TOKEN_ERROR_CODES = frozenset({CH_ACCESS_TOKEN_INVALID, OA_AUTH_TOKEN_EXPIRED})


@dataclass(frozen=True)
class Frame:
    payload_type: int
    payload: dict[str, Any]
    client_msg_id: str | None = None


class MalformedFrameError(ValueError):
    """The peer sent something that is not a cTrader JSON frame."""


def encode_frame(payload_type: int, payload: dict[str, Any], client_msg_id: str | None = None) -> str:
    frame: dict[str, Any] = {"payloadType": int(payload_type), "payload": payload}
    if client_msg_id is not None:
        frame["clientMsgId"] = client_msg_id
    return json.dumps(frame, separators=(",", ":"))


def decode_frame(raw: str | bytes) -> Frame:
    try:
        data = json.loads(raw)
        payload_type = int(data["payloadType"])
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedFrameError(f"not a cTrader JSON frame: {str(raw)[:200]!r}") from exc
    if not isinstance(data, dict):
        raise MalformedFrameError(f"not a cTrader JSON frame: {str(raw)[:200]!r}")
    payload = data.get("payload") or {}
    client_msg_id = data.get("clientMsgId")
    return Frame(payload_type, payload, None if client_msg_id is None else str(client_msg_id))


def units_to_volume(units: float) -> int:
    """Instrument units -> protocol volume (cents of a unit). Refuses quantities finer than 0.01 unit."""
    volume = units * VOLUME_SCALE
    rounded = round(volume)
    if rounded <= 0 or not math.isclose(volume, rounded, rel_tol=0.0, abs_tol=1e-6):
        raise InvalidOrderError(f"quantity {units} units is not a positive multiple of 0.01 unit")
    return rounded


def volume_to_units(volume: int) -> float:
    return volume / VOLUME_SCALE


def relative_distance_to_protocol(distance: float, digits: int) -> int:
    """A price distance -> integer 1/100000 units, rounded to the symbol's quoted digits."""
    if digits > 5:
        raise InvalidOrderError(f"symbol digits {digits} finer than the protocol's 1/100000 price grid")
    step = 10 ** (5 - digits)
    scaled = round(distance * RELATIVE_PRICE_SCALE / step) * step
    if scaled <= 0:
        raise InvalidOrderError(f"price distance {distance} rounds to zero at {digits} digits")
    return scaled


def money_from_protocol(amount: int | None, money_digits: int | None) -> float:
    """Monetary integers carry their own exponent (`moneyDigits`); absent means cents (2)."""
    if amount is None:
        return 0.0
    return amount / 10 ** (2 if money_digits is None else money_digits)


def price_from_protocol(points: int, digits: int) -> float:
    """An integer in 1/100000 of a price unit -> the price, rounded to the symbol's quoted digits."""
    return round(points / RELATIVE_PRICE_SCALE, digits)


@dataclass(frozen=True)
class Trendbar:
    """One historical bar on BID prices; `open_time_ms` is the bar's open time (Unix ms, UTC)."""

    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: int  # ticks


def decode_trendbar(raw: dict[str, Any], digits: int) -> Trendbar:
    """ProtoOATrendbar -> prices. `low` is absolute; open, close and high are unsigned deltas above it.

    Fields equal to zero may be left out of a JSON frame, so an absent delta or volume reads as 0; an absent
    `low` or time, or a delta above `deltaHigh`, is a malformed bar.
    """
    try:
        low = int(raw["low"])
        minutes = int(raw["utcTimestampInMinutes"])
        delta_open, delta_close, delta_high = (
            int(raw.get(key) or 0) for key in ("deltaOpen", "deltaClose", "deltaHigh")
        )
        volume = int(raw.get("volume") or 0)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedFrameError(f"trendbar without a usable low/utcTimestampInMinutes: {raw!r}") from exc
    deltas = (delta_open, delta_close, delta_high)
    if low <= 0 or min(*deltas, volume) < 0 or max(delta_open, delta_close) > delta_high:
        raise MalformedFrameError(f"trendbar breaks low <= open, close <= high: {raw!r}")
    return Trendbar(
        open_time_ms=minutes * _MINUTE_MS,
        open=price_from_protocol(low + delta_open, digits),
        high=price_from_protocol(low + delta_high, digits),
        low=price_from_protocol(low, digits),
        close=price_from_protocol(low + delta_close, digits),
        volume=volume,
    )


def trendbar_windows(period: TrendbarPeriod, from_ms: int, to_ms: int) -> list[tuple[int, int]]:
    """Consecutive non-overlapping inclusive windows over from_ms..to_ms, as wide as the server allows."""
    if to_ms < from_ms:
        raise ValueError(f"toTimestamp {to_ms} is before fromTimestamp {from_ms}")
    width = MAX_TRENDBAR_WINDOW_MS[period]
    windows = []
    start = from_ms
    while start <= to_ms:
        end = min(start + width, to_ms)
        windows.append((start, end))
        start = end + 1
    return windows
