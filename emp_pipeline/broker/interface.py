"""The one broker interface the live execution job talks to, whatever executes the orders.

Exactly-once submission rests on the client order id: the caller derives it deterministically (strategy, bar,
symbol), records it before submitting, and asks `order_status`/`reconcile` about it after any doubt. Every
broker here therefore treats a client order id as the identity of an order, never the call that sent it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

MAX_CLIENT_ORDER_ID_LENGTH = 50  # cTrader's clientOrderId limit; the paper broker keeps the same rule
MAX_LABEL_LENGTH = 100


class BrokerKind(StrEnum):
    """The brokers a live run can trade through (broker.factory); the registry stores the value as text,
    so a new kind needs code here and in the factory, never a schema migration."""

    PAPER = "paper"
    CTRADER = "ctrader"


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is OrderSide.BUY else -1


class OrderStatus(StrEnum):
    """Lifecycle of an order, for the brokers and the registry alike (the registry never stores
    `not_found`, see RECORDED_STATUSES)."""

    PENDING = "pending"  # recorded, not sent yet
    SUBMITTED = "submitted"  # sent, not acknowledged yet
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # also orders the broker expired (the reason says so)
    UNKNOWN = "unknown"  # sent, no answer, not in the broker's history yet: reconcile before resubmitting
    NOT_FOUND = "not_found"  # a reconcile answer, never stored: the broker has no trace of this order

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.CANCELLED})
# What an order row in the registry may say, and which of those are still in flight (an `unknown` order may
# yet fill: it counts as open until reconciliation tells the truth).
RECORDED_STATUSES = tuple(status for status in OrderStatus if status is not OrderStatus.NOT_FOUND)
OPEN_STATUSES = tuple(status for status in RECORDED_STATUSES if status not in TERMINAL_STATUSES)


class BrokerError(Exception):
    """Base class of every broker failure."""


class InvalidOrderError(BrokerError, ValueError):
    """The order request itself is malformed; fix the caller, retrying cannot help."""


class SymbolNotFoundError(BrokerError, KeyError):
    """The broker does not know the symbol; map the instrument to the broker's symbol name."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class BrokerAuthError(BrokerError):
    """Credentials are wrong or revoked: a person must fix the configuration or re-authorise."""


class BrokerConnectionError(BrokerError):
    """The broker could not be reached after the configured reconnect attempts."""


@dataclass(frozen=True)
class OrderRequest:
    """A market order in instrument units (not lots, not broker volume cents).

    `relative_stop_loss`/`relative_take_profit` are price distances from the fill price (e.g. 0.0050 on EURUSD
    for 50 pips), which is all a market order can carry on cTrader.
    """

    client_order_id: str
    symbol: str
    side: OrderSide
    quantity: float
    order_type: str = "market"
    relative_stop_loss: float | None = None
    relative_take_profit: float | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if not self.client_order_id or len(self.client_order_id) > MAX_CLIENT_ORDER_ID_LENGTH:
            raise InvalidOrderError(
                f"client_order_id {self.client_order_id!r} must be 1..{MAX_CLIENT_ORDER_ID_LENGTH} characters"
            )
        if not self.symbol:
            raise InvalidOrderError(f"order {self.client_order_id}: symbol is empty")
        try:
            object.__setattr__(self, "side", OrderSide(self.side))
        except ValueError as exc:
            raise InvalidOrderError(
                f"order {self.client_order_id}: side {self.side!r} is not buy/sell"
            ) from exc
        if not self.quantity > 0:
            raise InvalidOrderError(
                f"order {self.client_order_id}: quantity must be > 0 units (got {self.quantity}); "
                "express direction with side"
            )
        if self.order_type != "market":
            raise InvalidOrderError(
                f"order {self.client_order_id}: order_type {self.order_type!r} is not supported"
            )
        for name in ("relative_stop_loss", "relative_take_profit"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidOrderError(f"order {self.client_order_id}: {name} must be a positive distance")
        if self.label is not None and len(self.label) > MAX_LABEL_LENGTH:
            raise InvalidOrderError(
                f"order {self.client_order_id}: label is longer than {MAX_LABEL_LENGTH} characters"
            )


@dataclass(frozen=True)
class Fill:
    broker_fill_id: str
    client_order_id: str
    symbol: str
    side: OrderSide
    quantity: float
    price: float
    fee: float
    filled_at: datetime


@dataclass(frozen=True)
class OrderResult:
    client_order_id: str
    status: OrderStatus
    broker_order_id: str | None = None
    fills: tuple[Fill, ...] = ()
    reason: str | None = None  # broker error code and description when rejected or unknown

    @property
    def filled_quantity(self) -> float:
        return sum(fill.quantity for fill in self.fills)

    @property
    def average_price(self) -> float | None:
        quantity = self.filled_quantity
        if quantity == 0:
            return None
        return sum(fill.quantity * fill.price for fill in self.fills) / quantity

    @property
    def total_fee(self) -> float:
        return sum(fill.fee for fill in self.fills)


@dataclass(frozen=True)
class Position:
    """Net position per symbol: signed quantity in units (short < 0)."""

    symbol: str
    quantity: float
    average_price: float | None


@dataclass(frozen=True)
class ReconcileReport:
    """What the broker says right now: net positions, and what became of the client order ids asked about."""

    positions: tuple[Position, ...]
    orders: Mapping[str, OrderResult] = field(default_factory=dict)

    @property
    def missing_client_order_ids(self) -> tuple[str, ...]:
        return tuple(
            client_order_id
            for client_order_id, result in self.orders.items()
            if result.status is OrderStatus.NOT_FOUND
        )

    def position_quantity(self, symbol: str) -> float:
        return sum(position.quantity for position in self.positions if position.symbol == symbol)


@runtime_checkable
class Broker(Protocol):
    """Synchronous on purpose: Dagster ops call it directly, brokers hide their own concurrency."""

    def submit_order(self, request: OrderRequest) -> OrderResult:
        """Submit once per client order id; a repeated id returns the existing order, never a second one."""
        ...

    def order_status(self, client_order_id: str) -> OrderResult: ...

    def positions(self) -> tuple[Position, ...]: ...

    def reconcile(self, client_order_ids: Sequence[str] = ()) -> ReconcileReport: ...

    def close(self) -> None: ...


class AccessTokenProvider(Protocol):
    """Where the cTrader broker gets its OAuth access token (the auth package's TokenManager fits).

    `get_access_token` re-reads the shared store, so a token refreshed by another process is picked up;
    `force_refresh` is given the token the broker rejected and refreshes (under the provider's own lock) only
    if the store still holds that one, so one invalidation costs one refresh however many callers saw it.
    """

    def get_access_token(self) -> str: ...

    def force_refresh(self, rejected_access_token: str) -> str: ...
