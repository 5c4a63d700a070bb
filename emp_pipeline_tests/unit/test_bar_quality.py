from datetime import date

import numpy as np
import pandas as pd

from emp_pipeline.data.sample import SampleSource
from emp_pipeline.domain.bar_quality import (
    BAR_CHECKS,
    MAX_UNCHANGED_SESSIONS,
    check_adjusted_close,
    check_bar_to_bar_factor,
    check_calendar_gaps,
    check_freshness,
    check_frozen_prices,
    check_future_bars,
    check_ohlc_consistency,
    check_on_calendar,
    check_positive_prices,
    check_price_bounds,
    check_robust_jumps,
    check_unique_bars,
    evaluate_bar_checks,
    max_unchanged_bars,
)
from emp_pipeline.domain.bars import normalise_bars
from emp_pipeline.domain.calendars import trading_days
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta, load_universe
from emp_pipeline.domain.synthetic import synthetic_instrument
from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline.settings import SAMPLE_UNIVERSE_FILE


def _meta(symbol: str, calendar: str) -> InstrumentMeta:
    asset_class = AssetClass.EQUITY if calendar == "XNYS" else AssetClass.CRYPTO
    return synthetic_instrument(symbol, name=symbol, asset_class=asset_class, calendar=calendar)


def _bars(rows: list[tuple[str, str, float, float, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["symbol", "date", "open", "high", "low", "close"])
    frame["adj_close"] = frame["close"]
    frame["volume"] = 100.0
    return normalise_bars(frame)


def test_ohlc_inconsistency_names_the_bar():
    bars = _bars([("AAA", "2021-01-04", 10, 11, 9, 10.5), ("AAA", "2021-01-05", 10, 11, 9, 11.5)])
    outcome = check_ohlc_consistency(bars)
    assert not outcome.passed
    assert outcome.failures == 1
    assert outcome.examples == ("AAA 2021-01-05",)


def test_non_positive_prices_and_duplicates_are_found():
    bars = _bars([("AAA", "2021-01-04", 10, 11, 0.0, 10.5), ("AAA", "2021-01-04", 10, 11, 9, 10.5)])
    assert check_positive_prices(bars).failures == 1
    duplicates = check_unique_bars(bars)
    assert not duplicates.passed and duplicates.failures == 2


def test_clean_bars_pass():
    bars = _bars([("AAA", "2021-01-04", 10, 11, 9, 10.5)])
    assert all(
        check(bars).passed for check in (check_ohlc_consistency, check_positive_prices, check_unique_bars)
    )


def test_gaps_follow_each_instruments_calendar():
    # 2021-01-01 is a NYSE holiday and 01-02/03 a weekend: only 01-05 is a real gap for the equity;
    # the 24x7 instrument misses the weekend days it should trade.
    bars = _bars(
        [
            ("AAA", "2021-01-04", 10, 11, 9, 10),
            ("AAA", "2021-01-06", 10, 11, 9, 10),
            ("BTC", "2021-01-01", 10, 11, 9, 10),
            ("BTC", "2021-01-04", 10, 11, 9, 10),
            ("BTC", "2021-01-05", 10, 11, 9, 10),
            ("BTC", "2021-01-06", 10, 11, 9, 10),
        ]
    )
    outcome = check_calendar_gaps(
        bars, [_meta("AAA", "XNYS"), _meta("BTC", "24x7")], date(2021, 1, 1), date(2021, 1, 6)
    )
    assert not outcome.passed
    assert outcome.failures == 3
    assert "AAA 2021-01-05" in outcome.examples
    assert "BTC 2021-01-02" in outcome.examples and "BTC 2021-01-03" in outcome.examples


def test_freshness_counts_sessions_not_calendar_days():
    instruments = [_meta("AAA", "XNYS")]
    # Friday's bar is current on the following Monday morning before the close... one session behind.
    assert check_freshness({"AAA": date(2021, 1, 8)}, instruments, date(2021, 1, 11), 1).passed
    stale = check_freshness({"AAA": date(2021, 1, 4)}, instruments, date(2021, 1, 11), 1)
    assert not stale.passed and "AAA" in stale.description
    assert not check_freshness({}, instruments, date(2021, 1, 11), 3).passed


# ------------------------------------------------------------------ plausibility (issue 15, point 3)


def _daily(
    symbol: str, closes: list[float], first: str = "2021-01-04", calendar: str = "XNYS"
) -> pd.DataFrame:
    """Bars on consecutive sessions of ``calendar`` with open = high = low = close (and adj_close)."""
    days = trading_days(calendar, first, pd.Timestamp(first) + pd.Timedelta(days=2 * len(closes) + 10))
    frame = pd.DataFrame({"symbol": symbol, "date": days[: len(closes)], "close": closes})
    frame = frame.assign(
        open=frame["close"], high=frame["close"], low=frame["close"], adj_close=frame["close"]
    )
    frame["volume"] = 100.0
    return normalise_bars(frame)


def _wiggle(count: int, level: float = 100.0, seed: int = 3) -> list[float]:
    """A random walk with ~1% daily moves, so no two closes repeat."""
    steps = np.random.default_rng(seed).normal(0.0, 0.01, count)
    return list(level * np.exp(np.cumsum(steps)))


def test_a_1e300_price_is_out_of_bounds_and_an_implausible_jump():
    bars = _daily("GOOG", [*_wiggle(30), 1e300, *_wiggle(5, seed=4)])
    bounds = check_price_bounds(bars)
    assert not bounds.passed and bounds.failures == 1
    assert bounds.examples == ("GOOG 2021-02-17 open=1e+300 outside [1e-09, 1e+12]",)
    jumps = check_bar_to_bar_factor(bars)
    assert jumps.failures == 2  # up to 1e300 and back down
    assert (
        jumps.examples[0].startswith("GOOG 2021-02-17 adj_close=1e+300,") and "bound 10x" in jumps.examples[0]
    )


def test_the_jump_bound_reads_the_bar_before_the_window_from_history():
    history = _daily("GOOG", _wiggle(40))
    later = _daily("GOOG", [history["close"].iloc[-1] * 1000], first="2021-03-10")
    assert check_bar_to_bar_factor(later).passed  # alone, a single bar has nothing to jump from
    outcome = check_bar_to_bar_factor(later, history)
    assert not outcome.passed and "1e+03x the bar before" in outcome.examples[0]


def test_adjusted_close_a_thousand_times_close_is_refused():
    bars = _daily("GOOG", _wiggle(3))
    bars.loc[1, "adj_close"] = bars.loc[1, "close"] * 1000
    outcome = check_adjusted_close(bars)
    assert not outcome.passed and outcome.failures == 1
    assert "GOOG 2021-01-05" in outcome.examples[0] and "is 1e+03x close=" in outcome.examples[0]
    assert "(bounds 1/20..20)" in outcome.examples[0]
    dividends = bars.assign(adj_close=bars["close"] * 0.3)  # decades of dividends: plausible
    assert check_adjusted_close(dividends).passed


def test_a_frozen_price_is_found_even_when_the_run_began_in_history():
    frozen = [*_wiggle(5), *([123.45] * 400)]  # ~19 months of one price
    outcome = check_frozen_prices(_daily("GOOG", frozen))
    assert not outcome.passed and outcome.failures == 400 - MAX_UNCHANGED_SESSIONS
    assert outcome.examples == (
        "GOOG 2021-01-26 close=123.45 unchanged for 11 bars since 2021-01-11 (limit 10)",
    )

    at_limit = _daily("GOOG", [*_wiggle(5), *([50.0] * MAX_UNCHANGED_SESSIONS), 51.0])
    assert check_frozen_prices(at_limit).passed
    history = _daily("GOOG", [*_wiggle(5), *([50.0] * 8)])
    window = _daily("GOOG", [50.0] * 3, first="2021-01-25")
    assert check_frozen_prices(window).passed
    spanning = check_frozen_prices(window, history)
    assert not spanning.passed and spanning.failures == 1


def test_a_frozen_price_is_a_span_of_sessions_in_bars_of_the_timeframe():
    assert max_unchanged_bars(Timeframe.D1, "XNYS") == 10
    assert max_unchanged_bars(Timeframe.H1, "24x5") == 240  # two FX weeks of hours
    assert max_unchanged_bars(Timeframe.M1, "24x5") == 14_400
    assert max_unchanged_bars(Timeframe.W1, "24x5") == 10  # never fewer than ten bars
    quiet_hours = _daily("EURUSD", [*_wiggle(5, level=1.1), *([1.10512] * 30), 1.10515])
    assert not check_frozen_prices(quiet_hours).passed  # as daily bars: a month frozen
    assert check_frozen_prices(quiet_hours, limits={"EURUSD": 240}).passed  # as H1: thirty quiet hours
    dead_feed = _daily("EURUSD", [*_wiggle(5, level=1.1), *([1.10512] * 241)])
    outcome = check_frozen_prices(dead_feed, limits={"EURUSD": 240})
    assert not outcome.passed and outcome.failures == 1 and "(limit 240)" in outcome.examples[0]


def test_bars_dated_in_2099_are_from_the_future():
    bars = pd.concat(
        [_daily("GOOG", _wiggle(2)), _daily("GOOG", [100.0], first="2099-01-05")], ignore_index=True
    )
    outcome = check_future_bars(bars, now=pd.Timestamp("2021-06-01 12:00", tz="UTC"))
    assert not outcome.passed and outcome.failures == 1
    assert outcome.examples == ("GOOG 2099-01-05 is after now + one bar (2021-06-02T12:00+00:00)",)
    assert check_future_bars(bars.iloc[:2], now=pd.Timestamp("2021-01-04 00:30", tz="UTC")).passed


def test_a_weekend_row_of_an_equity_is_off_its_calendar():
    bars = _daily("GOOG", _wiggle(5))
    saturday = bars.iloc[[0]].assign(date=pd.Timestamp("2021-01-09", tz="UTC"))
    bars = normalise_bars(pd.concat([bars, saturday], ignore_index=True))
    outcome = check_on_calendar(bars, [_meta("GOOG", "XNYS")])
    assert not outcome.passed
    assert outcome.examples == ("GOOG 2021-01-09 (Saturday) is not a XNYS session",)
    assert check_on_calendar(bars, [_meta("GOOG", "24x7")]).passed


def test_a_robust_jump_warns_with_its_bound_and_quiet_markets_keep_a_floor():
    crash = _wiggle(60)
    crash.append(crash[-1] * 0.75)  # -29% against ~1% daily moves
    outcome = check_robust_jumps(_daily("SPX", crash))
    assert not outcome.passed and outcome.failures == 1
    assert outcome.examples[0].startswith("SPX 2021-03-31 log return -0.288")
    assert "beyond +/-0.084" in outcome.examples[0]
    pegged = [100.0 + 0.001 * (i % 2) for i in range(60)] + [103.0]  # +3% after near-zero moves
    assert check_robust_jumps(_daily("PEG", pegged)).passed


def test_every_blocking_check_passes_on_the_bundled_real_history():
    universe = load_universe(SAMPLE_UNIVERSE_FILE)
    bars = SampleSource().fetch(list(universe.symbols), date(1999, 1, 1), date(2018, 12, 31))
    outcomes = evaluate_bar_checks(
        bars,
        None,
        universe.instruments,
        date(2004, 8, 19),
        date(2013, 3, 1),
        pd.Timestamp("2026-01-01", tz="UTC"),
    )
    assert [outcome.name for outcome in outcomes] == [check.name for check in BAR_CHECKS]
    blocking = {check.name for check in BAR_CHECKS if check.blocking}
    assert [outcome.name for outcome in outcomes if outcome.name in blocking and not outcome.passed] == []


def test_blocking_checks_say_why_they_block_and_warnings_why_they_warn():
    for check in BAR_CHECKS[3:]:
        assert ("blocks:" in check.description) == check.blocking, check.name
        assert ("warns:" in check.description) == (not check.blocking), check.name
