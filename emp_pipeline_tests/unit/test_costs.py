"""`Costs`: one validated value for what a strategy's fills pay, and its stored record."""

from __future__ import annotations

import math

import pytest

from emp_pipeline.domain.costs import MAX_BPS, Costs, CostsError
from emp_pipeline.domain.sleeve import FillCosts


def test_defaults_are_the_costs_every_earlier_version_measured_with():
    assert Costs() == Costs(fee_bps=1.0, slippage_bps=1.0)
    assert Costs().fill_costs() == FillCosts(1.0, 1.0)


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ({"fee_bps": -0.5}, r"Costs\.fee_bps=-0\.5 is outside \[0, 1000\] basis points"),
        ({"slippage_bps": MAX_BPS + 1}, r"Costs\.slippage_bps=1001\.0 is outside"),
        ({"fee_bps": math.nan}, r"Costs\.fee_bps=nan is outside"),
        ({"slippage_bps": math.inf}, r"Costs\.slippage_bps=inf is outside"),
        ({"fee_bps": "2"}, r"Costs\.fee_bps='2' is not a number"),
        ({"fee_bps": True}, r"Costs\.fee_bps=True is not a number"),
    ],
)
def test_a_term_that_cannot_be_right_is_refused_by_name(terms, message):
    with pytest.raises(CostsError, match=message):
        Costs(**terms)


def test_terms_are_keyword_only_so_new_terms_cannot_shift_positional_callers():
    with pytest.raises(TypeError):
        Costs(2.0, 3.0)  # type: ignore[misc]


def test_the_step_reads_the_terms_as_floats():
    fill = Costs(fee_bps=2, slippage_bps=0).fill_costs()
    assert fill == FillCosts(2.0, 0.0)
    assert all(type(term) is float for term in fill)


def test_stored_record_round_trips():
    costs = Costs(fee_bps=2.5, slippage_bps=0.25)
    assert Costs.from_dict(costs.to_dict(), source="run r1") == costs
    assert costs.to_dict() == {"fee_bps": 2.5, "slippage_bps": 0.25}


def test_a_stored_record_from_a_newer_version_or_incomplete_is_refused_naming_it():
    with pytest.raises(
        CostsError, match=r"costs of run r1 name terms this version does not know: spread_pips"
    ):
        Costs.from_dict({"fee_bps": 1.0, "slippage_bps": 1.0, "spread_pips": 0.3}, source="run r1")
    with pytest.raises(CostsError, match=r"costs of run r2 lack slippage_bps"):
        Costs.from_dict({"fee_bps": 1.0}, source="run r2")
    with pytest.raises(CostsError, match=r"costs of run r3: Costs\.fee_bps=-1 is outside"):
        Costs.from_dict({"fee_bps": -1, "slippage_bps": 1.0}, source="run r3")
