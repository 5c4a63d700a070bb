import dataclasses

import pytest

from emp_pipeline.domain.instrument_changes import (
    InstrumentTermsChangedError,
    TermChange,
    term_changes,
)
from emp_pipeline.domain.instruments import AssetClass, SwapType
from emp_pipeline.domain.synthetic import synthetic_instrument

GOOG = synthetic_instrument("GOOG", name="Alphabet", asset_class=AssetClass.EQUITY, calendar="XNAS")


def test_a_weekend_row_that_made_an_equity_crypto_is_two_named_changes():
    crypto = dataclasses.replace(GOOG, asset_class=AssetClass.CRYPTO, calendar="24x7")
    assert term_changes([GOOG], [crypto]) == [
        TermChange("GOOG", "asset_class", "equity", "crypto"),
        TermChange("GOOG", "calendar", "XNAS", "24x7"),
    ]


def test_equal_terms_new_symbols_and_unstored_terms_are_not_changes():
    same = dataclasses.replace(GOOG, tick_size=0.01)
    newcomer = synthetic_instrument("MSFT")
    assert term_changes([GOOG], [same, newcomer]) == []
    swaps = dataclasses.replace(GOOG, swap_long=-1.5, swap_type=SwapType.PERCENT)
    assert [change.term for change in term_changes([GOOG], [swaps])] == ["swap_long", "swap_type"]
    assert term_changes([GOOG], [swaps], terms=("tick_size", "calendar")) == []


def test_the_refusal_lists_every_change_and_how_to_accept():
    changes = term_changes([GOOG], [dataclasses.replace(GOOG, lot_size=100.0)])
    with pytest.raises(InstrumentTermsChangedError) as refused:
        raise InstrumentTermsChangedError("universe inferred from /data/csv", changes, "rerun with accept")
    assert str(refused.value) == (
        "universe inferred from /data/csv changes 1 stored instrument terms (GOOG lot_size: 1.0 -> 100.0); "
        "nothing was written. Terms change only by an explicit action: rerun with accept"
    )
