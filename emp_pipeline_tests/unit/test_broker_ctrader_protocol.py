"""Pure pieces of the cTrader client: unit conversions, frames, history matching, position netting, config."""

from __future__ import annotations

import pytest

from emp_pipeline.broker import ctrader_protocol as proto
from emp_pipeline.broker.ctrader_client import (
    CTraderConfig,
    CTraderConfigError,
    net_positions,
    order_result_from_history,
)
from emp_pipeline.broker.interface import InvalidOrderError, OrderSide, OrderStatus


def test_payload_types_match_the_protocol_definitions() -> None:
    assert (proto.PayloadType.APPLICATION_AUTH_REQ, proto.PayloadType.ACCOUNT_AUTH_REQ) == (2100, 2102)
    assert (proto.PayloadType.NEW_ORDER_REQ, proto.PayloadType.EXECUTION_EVENT) == (2106, 2126)
    assert (
        proto.PayloadType.RECONCILE_REQ,
        proto.PayloadType.ORDER_LIST_REQ,
        proto.PayloadType.DEAL_LIST_REQ,
    ) == (
        2124,
        2175,
        2133,
    )
    assert (proto.PayloadType.OA_ERROR_RES, proto.PayloadType.ACCOUNTS_TOKEN_INVALIDATED_EVENT) == (
        2142,
        2147,
    )
    assert (proto.ExecutionType.ORDER_ACCEPTED, proto.ExecutionType.ORDER_FILLED) == (2, 3)


@pytest.mark.parametrize(
    ("units", "volume"), [(1_000, 100_000), (0.01, 1), (100_000, 10_000_000), (12.34, 1_234)]
)
def test_units_become_volume_in_cents(units: float, volume: int) -> None:
    assert proto.units_to_volume(units) == volume
    assert proto.volume_to_units(volume) == pytest.approx(units)


@pytest.mark.parametrize("units", [0.001, 0, -5, 1.005])
def test_quantities_the_protocol_cannot_carry_are_refused(units: float) -> None:
    with pytest.raises(InvalidOrderError, match=r"0\.01 unit"):
        proto.units_to_volume(units)


@pytest.mark.parametrize(
    ("distance", "digits", "expected"),
    [(0.0050, 5, 500), (0.5, 3, 50_000), (0.123456, 5, 12_346), (1.2345, 2, 123_000), (12.0, 2, 1_200_000)],
)
def test_relative_stops_are_in_hundred_thousandths_on_the_symbol_grid(
    distance: float, digits: int, expected: int
) -> None:
    assert proto.relative_distance_to_protocol(distance, digits) == expected


def test_a_stop_that_rounds_to_nothing_is_refused() -> None:
    with pytest.raises(InvalidOrderError, match="rounds to zero"):
        proto.relative_distance_to_protocol(0.001, 2)


def test_money_uses_its_own_exponent() -> None:
    assert proto.money_from_protocol(-12_345, 2) == pytest.approx(-123.45)
    assert proto.money_from_protocol(10053099944, 8) == pytest.approx(100.53099944)
    assert proto.money_from_protocol(None, 2) == 0.0


def test_frames_round_trip_and_garbage_is_named() -> None:
    frame = proto.decode_frame(proto.encode_frame(2106, {"volume": 100}, "m1"))
    assert (frame.payload_type, frame.payload, frame.client_msg_id) == (2106, {"volume": 100}, "m1")
    assert proto.decode_frame('{"payloadType": 51}').client_msg_id is None
    with pytest.raises(proto.MalformedFrameError):
        proto.decode_frame("{nope")
    with pytest.raises(proto.MalformedFrameError):
        proto.decode_frame('{"payload": {}}')


def test_order_history_and_deals_become_an_order_result() -> None:
    order = {"orderId": 7, "orderStatus": 2, "clientOrderId": "c1", "tradeData": {"symbolId": 1}}
    deals = [
        {"dealId": 70, "orderId": 7, "filledVolume": 60_000, "executionPrice": 1.1, "tradeSide": 2,
         "commission": -150, "moneyDigits": 2, "executionTimestamp": 1_700_000_000_000},
        {"dealId": 71, "orderId": 7, "filledVolume": 40_000, "executionPrice": 1.2, "tradeSide": 2},
        {"dealId": 99, "orderId": 8, "filledVolume": 10_000, "executionPrice": 9.9, "tradeSide": 1},
    ]  # fmt: skip
    result = order_result_from_history("c1", order, deals, "EURUSD")
    assert (result.status, result.broker_order_id) == (OrderStatus.FILLED, "7")
    assert [f.broker_fill_id for f in result.fills] == ["70", "71"]
    assert result.filled_quantity == 1_000 and result.average_price == pytest.approx(1.14)
    assert result.fills[0].side is OrderSide.SELL and result.fills[0].fee == pytest.approx(1.5)
    partially = order_result_from_history("c1", {**order, "orderStatus": 1}, deals[:1], "EURUSD")
    assert partially.status is OrderStatus.PARTIALLY_FILLED


def test_hedged_positions_net_to_one_signed_quantity_per_symbol() -> None:
    def position(symbol_id: int, side: int, volume: int, price: float) -> dict[str, object]:
        trade = {"symbolId": symbol_id, "tradeSide": side, "volume": volume}
        return {"positionId": volume, "tradeData": trade, "positionStatus": 1, "price": price}

    netted = net_positions(
        [position(1, 1, 300_000, 1.10), position(1, 1, 100_000, 1.20), position(1, 2, 100_000, 1.30),
         position(2, 2, 50_000, 150.0)],
        {1: "EURUSD", 2: "USDJPY"},
    )  # fmt: skip
    by_symbol = {p.symbol: p for p in netted}
    assert by_symbol["EURUSD"].quantity == 3_000 and by_symbol["EURUSD"].average_price == pytest.approx(1.125)
    assert by_symbol["USDJPY"].quantity == -500 and by_symbol["USDJPY"].average_price == pytest.approx(150.0)


def _config(url: str, **extra: object) -> CTraderConfig:
    return CTraderConfig(url=url, client_id="id", client_secret="secret", account_id=1, **extra)  # type: ignore[arg-type]


def test_plain_websocket_only_to_loopback_with_the_explicit_flag() -> None:
    assert _config("wss://demo.ctraderapi.com:5036").url.startswith("wss://")
    assert _config("ws://127.0.0.1:9999", allow_plaintext_loopback=True).allow_plaintext_loopback
    with pytest.raises(CTraderConfigError, match="wss://"):
        _config("ws://127.0.0.1:9999")
    with pytest.raises(CTraderConfigError, match="loopback"):
        _config("ws://demo.ctraderapi.com:5036", allow_plaintext_loopback=True)
    with pytest.raises(CTraderConfigError, match="must start with wss://"):
        _config("https://demo.ctraderapi.com")


def test_the_client_secret_stays_out_of_reprs() -> None:
    assert "secret" not in repr(_config("wss://demo.ctraderapi.com:5036"))
