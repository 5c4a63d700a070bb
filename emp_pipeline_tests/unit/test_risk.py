"""Pre-trade risk checks: each limit, the kill switch, and the rule that reducing exposure always passes."""

from __future__ import annotations

import pytest

from emp_pipeline.domain.risk import (
    AccountSnapshot,
    MissingPriceError,
    ProposedOrder,
    RiskConfigError,
    RiskLimits,
    RiskVerdict,
    account_equity,
    check_orders,
)

LIMITS = RiskLimits(max_position_fraction=0.25, max_gross_exposure=0.5, daily_loss_limit=0.05)
PRICES = {"A": 100.0, "B": 50.0}


def _snapshot(positions=None, *, equity=100_000.0, day_start=100_000.0, kill=False) -> AccountSnapshot:
    return AccountSnapshot(equity, day_start, kill, positions or {}, PRICES)


def _one(quantity: float, symbol: str = "A", **snapshot) -> tuple[RiskVerdict, float, str]:
    decision = check_orders([ProposedOrder("k", symbol, quantity)], _snapshot(**snapshot), LIMITS)[0]
    return decision.verdict, decision.approved_quantity, decision.reason


def test_an_order_within_every_limit_is_approved_as_asked():
    assert _one(250.0)[:2] == (RiskVerdict.APPROVED, 250.0)  # 25,000 = exactly 25 % of equity


def test_per_instrument_limit_rejects_the_whole_order():
    verdict, quantity, reason = _one(251.0)
    assert (verdict, quantity) == (RiskVerdict.REJECTED, 0.0)
    assert "A position" in reason and "25.00%" in reason


def test_gross_limit_counts_every_symbol_and_earlier_orders_in_the_batch():
    limits = RiskLimits(max_position_fraction=0.25, max_gross_exposure=0.4, daily_loss_limit=0.05)
    orders = [ProposedOrder("1", "A", 200.0), ProposedOrder("2", "B", 400.0), ProposedOrder("3", "B", 20.0)]
    decisions = check_orders(orders, _snapshot(), limits)
    assert [d.verdict for d in decisions] == [
        RiskVerdict.APPROVED,
        RiskVerdict.APPROVED,
        RiskVerdict.REJECTED,
    ]
    assert "gross exposure would be 41000.00" in decisions[2].reason  # 20,000 + 21,000 > 40 % of 100,000


def test_kill_switch_blocks_new_exposure_but_lets_positions_close():
    assert _one(10.0, kill=True)[0] is RiskVerdict.REJECTED
    assert "kill switch" in _one(10.0, kill=True)[2]
    assert _one(-100.0, positions={"A": 100.0}, kill=True)[:2] == (RiskVerdict.APPROVED, -100.0)
    assert _one(-40.0, positions={"A": 100.0}, kill=True)[:2] == (RiskVerdict.APPROVED, -40.0)


def test_a_blocked_reversal_is_cut_to_the_flattening_part():
    verdict, quantity, reason = _one(-150.0, positions={"A": 100.0}, kill=True)
    assert (verdict, quantity) == (RiskVerdict.REDUCED, -100.0)
    assert reason.startswith("flatten only")


def test_daily_loss_limit_blocks_new_exposure_from_the_days_starting_equity():
    assert _one(10.0, equity=95_001.0)[0] is RiskVerdict.APPROVED
    verdict, _, reason = _one(10.0, equity=95_000.0)
    assert verdict is RiskVerdict.REJECTED and "daily loss 5.00%" in reason
    assert _one(-10.0, positions={"A": 10.0}, equity=90_000.0)[0] is RiskVerdict.APPROVED


def test_missing_price_rejects_and_equity_marks_positions():
    assert _one(1.0, symbol="C")[0] is RiskVerdict.REJECTED
    assert account_equity(1000.0, {"A": 2.0, "B": -4.0}, PRICES) == 1000.0 + 200.0 - 200.0
    with pytest.raises(MissingPriceError, match="C"):
        account_equity(0.0, {"C": 1.0}, PRICES)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_position_fraction": 0.0}, {"max_gross_exposure": float("inf")}, {"daily_loss_limit": 1.5}],
)
def test_limits_outside_their_range_are_refused(kwargs):
    with pytest.raises(RiskConfigError):
        RiskLimits(**kwargs)
