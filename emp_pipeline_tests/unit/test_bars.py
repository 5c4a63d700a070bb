import pandas as pd
import pytest

from emp_pipeline.domain.bars import BarValidationError, adjusted_ohlc, normalise_bars, validate_bars


def _frame(**overrides: list[float]) -> pd.DataFrame:
    data = {
        "date": ["2020-01-02", "2020-01-03"],
        "symbol": ["AAA", "AAA"],
        "open": [100.0, 50.0],
        "high": [110.0, 55.0],
        "low": [90.0, 45.0],
        "close": [100.0, 50.0],
        "adj_close": [50.0, 50.0],
        "volume": [1.0, 2.0],
    }
    data.update(overrides)
    return normalise_bars(pd.DataFrame(data))


def test_adjusted_ohlc_puts_a_split_history_on_todays_scale():
    adjusted = adjusted_ohlc(_frame())
    assert adjusted[["open", "high", "low", "close"]].iloc[0].tolist() == [50.0, 55.0, 45.0, 50.0]
    # The newest bar (factor 1) keeps its real prices: live orders are priced in today's units.
    assert adjusted[["open", "high", "low", "close"]].iloc[1].tolist() == [50.0, 55.0, 45.0, 50.0]


def test_validation_names_the_bar_that_breaks_ohlc():
    with pytest.raises(
        BarValidationError, match=r"close outside \[low, high\] for symbol 'AAA' on 2020-01-03"
    ):
        validate_bars(_frame(close=[100.0, 60.0]))


def test_normalise_floors_local_timestamps_to_their_trading_day():
    frame = _frame(date=["2020-01-02 16:00-05:00", "2020-01-03 16:00-05:00"])
    assert frame["date"].dt.strftime("%Y-%m-%d %H:%M %Z").tolist() == [
        "2020-01-02 00:00 UTC",
        "2020-01-03 00:00 UTC",
    ]
