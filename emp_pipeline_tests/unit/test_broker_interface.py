"""Order requests refuse what no broker could execute, before anything is recorded or sent."""

from __future__ import annotations

import pytest

from emp_pipeline.broker.interface import InvalidOrderError, OrderRequest, OrderResult, OrderSide, OrderStatus


def test_side_strings_become_enum_members() -> None:
    assert OrderRequest("c1", "EURUSD", "sell", 1_000).side is OrderSide.SELL
    assert OrderSide.SELL.sign == -1 and OrderSide.BUY.sign == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"client_order_id": ""}, "client_order_id"),
        ({"client_order_id": "x" * 51}, "client_order_id"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": -10}, "quantity"),
        ({"side": "short"}, "buy/sell"),
        ({"order_type": "limit"}, "not supported"),
        ({"relative_stop_loss": -0.01}, "relative_stop_loss"),
        ({"label": "l" * 101}, "label"),
    ],
)
def test_malformed_requests_are_refused_with_the_reason(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"client_order_id": "c1", "symbol": "EURUSD", "side": "buy", "quantity": 1.0}
    with pytest.raises(InvalidOrderError, match=message):
        OrderRequest(**{**fields, **kwargs})  # type: ignore[arg-type]


def test_terminal_statuses_and_empty_results() -> None:
    assert OrderStatus.FILLED.is_terminal and OrderStatus.REJECTED.is_terminal
    assert not OrderStatus.ACCEPTED.is_terminal and not OrderStatus.PENDING.is_terminal
    empty = OrderResult("c1", OrderStatus.REJECTED)
    assert empty.filled_quantity == 0 and empty.average_price is None and empty.total_fee == 0
