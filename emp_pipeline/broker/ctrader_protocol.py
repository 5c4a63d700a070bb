"""cTrader Open API over JSON: payload types, enums, error codes and unit conversions.

Numbers come from Spotware's proto definitions (see /work/shared/notes/ctrader-open-api.md). Kept free of I/O
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


# Error codes (strings on the wire).
BLOCKED_PAYLOAD_TYPE = "BLOCKED_PAYLOAD_TYPE"
CH_CLIENT_AUTH_FAILURE = "CH_CLIENT_AUTH_FAILURE"
CH_CLIENT_NOT_AUTHENTICATED = "CH_CLIENT_NOT_AUTHENTICATED"
CH_ACCESS_TOKEN_INVALID = "CH_ACCESS_TOKEN_INVALID"
OA_AUTH_TOKEN_EXPIRED = "OA_AUTH_TOKEN_EXPIRED"
ALREADY_LOGGED_IN = "ALREADY_LOGGED_IN"
ACCOUNT_NOT_AUTHORIZED = "ACCOUNT_NOT_AUTHORIZED"
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
