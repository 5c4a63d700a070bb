"""Pre-trade risk checks: each limit, the kill switch, and the rule that reducing exposure always passes."""

from __future__ import annotations

import pytest

from emp_pipeline.domain.risk import (
    AccountSnapshot,
    MissingPriceError,
    ProposedOrder,
    RiskCeilingError,
    RiskConfigError,
    RiskLimits,
    RiskVerdict,
    account_equity,
    check_orders,
    position_fraction_ceiling,
    sizing_violation,
    tightened_limits,
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


CEILINGS = RiskLimits(max_position_fraction=0.25, max_gross_exposure=1.0, daily_loss_limit=0.05)
ORIGINS = {
    "max_position_fraction": "EMP_MAX_POSITION_FRACTION",
    "max_gross_exposure": "EMP_MAX_GROSS_EXPOSURE",
}


def test_a_run_may_tighten_the_environments_limits_and_unset_ones_keep_the_ceiling():
    limits = tightened_limits(CEILINGS, {"max_position_fraction": 0.1, "max_gross_exposure": None})
    assert limits == RiskLimits(max_position_fraction=0.1, max_gross_exposure=1.0, daily_loss_limit=0.05)
    assert tightened_limits(CEILINGS, {"daily_loss_limit": 0.05}) == CEILINGS


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        (
            {"max_position_fraction": 40.0},
            r"max_position_fraction=40 is above its ceiling 0.25 \(set by EMP_MAX_POSITION_FRACTION\)",
        ),
        (
            {"max_gross_exposure": 40.0},
            r"max_gross_exposure=40 is above its ceiling 1 \(set by EMP_MAX_GROSS_EXPOSURE\)",
        ),
        (
            {"daily_loss_limit": 0.5},
            r"daily_loss_limit=0.5 is above its ceiling 0.05: a run may only tighten",
        ),
        ({"max_gross_exposure": float("nan")}, r"max_gross_exposure=nan is above its ceiling 1"),
    ],
)
def test_a_run_asking_for_more_than_a_ceiling_is_refused_by_name(requested, message):
    with pytest.raises(RiskCeilingError, match=message):
        tightened_limits(CEILINGS, requested, ORIGINS)


def test_a_tightened_limit_is_still_validated():
    with pytest.raises(RiskConfigError, match="max_position_fraction=-1"):
        tightened_limits(CEILINGS, {"max_position_fraction": -1.0})
    with pytest.raises(RiskConfigError, match="unknown risk limits"):
        tightened_limits(CEILINGS, {"max_leverage": 2.0})


def test_the_sizing_ceiling_is_the_tighter_live_limit_and_names_why_a_gene_exceeds_it():
    assert position_fraction_ceiling(LIMITS) == 0.25
    assert position_fraction_ceiling(RiskLimits(0.4, 0.3)) == 0.3
    assert position_fraction_ceiling(RiskLimits(2.0, 3.0)) == 1.0
    assert sizing_violation(0.25, LIMITS) is None
    reason = sizing_violation(0.5, LIMITS)
    assert reason is not None and "50.00%" in reason and "25.00%" in reason and "rejected" in reason


def test_an_entry_at_the_ceiling_passes_the_live_check_whatever_the_sleeves_earned():
    """A strategy's entry is pf x its sleeve's equity; the account holds the strategy's equity, so at
    pf = ceiling the per-instrument check passes even when one sleeve holds nearly all of it."""
    capital, sleeves = 100_000.0, {"A": 0.9, "B": 0.1}  # kernel equity of each sleeve
    equity = capital * sum(sleeves.values())
    pf = position_fraction_ceiling(LIMITS)
    for symbol, sleeve in sleeves.items():
        units = pf * sleeve * capital / PRICES[symbol]
        verdict, _, reason = _one(units, symbol, equity=equity, day_start=equity)
        assert verdict is RiskVerdict.APPROVED, reason
    # A sizing gene 1 % above the ceiling, with one sleeve holding all the strategy's equity: refused.
    above = 1.01 * pf * equity / PRICES["A"]
    assert _one(above, "A", equity=equity, day_start=equity)[0] is RiskVerdict.REJECTED
