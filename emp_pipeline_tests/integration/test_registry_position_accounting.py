"""Average-price accounting conserves money: realised + unrealised PnL equals the fills' net cash flow."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emp_pipeline.registry.position_accounting import PositionState, apply_fill

FLAT = PositionState(quantity=0.0, avg_price=0.0, realised_pnl=0.0)

fills = st.lists(
    st.tuples(
        st.integers(min_value=-50, max_value=50).filter(bool).map(float),
        st.floats(min_value=1.0, max_value=500.0),
        st.floats(min_value=0.0, max_value=2.0),
    ),
    min_size=1,
    max_size=30,
)


@given(fills=fills, mark=st.floats(min_value=1.0, max_value=500.0))
def test_pnl_equals_cash_flow_marked_to_market(fills: list[tuple[float, float, float]], mark: float) -> None:
    state = FLAT
    cash = 0.0
    for quantity, price, fee in fills:
        state = apply_fill(state, quantity, price, fee)
        cash -= quantity * price + fee

    assert state.quantity == sum(q for q, _, _ in fills)
    unrealised = state.quantity * (mark - state.avg_price)
    assert state.realised_pnl + unrealised == pytest.approx(cash + state.quantity * mark, rel=1e-9, abs=1e-6)
    if state.quantity == 0:
        assert state.avg_price == 0.0
    else:
        assert state.avg_price > 0


def test_crossing_zero_reopens_at_the_fill_price() -> None:
    long = apply_fill(FLAT, 10, 100.0, 0.0)
    short = apply_fill(long, -15, 90.0, 1.0)

    assert (short.quantity, short.avg_price) == (-5.0, 90.0)
    assert short.realised_pnl == pytest.approx(10 * (90.0 - 100.0) - 1.0)
