"""cTrader market data, pure parts: trendbar decoding, request windows, trading-day labels, venue terms."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pandas as pd
import pytest

from emp_pipeline.broker import ctrader_protocol as proto
from emp_pipeline.broker.ctrader_client import CTraderSymbol, SpotQuote, SpreadSample
from emp_pipeline.data.ctrader import apply_venue_terms, labelled_bars, trendbar_frame
from emp_pipeline.data.source import MalformedDataError
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta, SwapType, Weekday
from emp_pipeline.domain.synthetic import synthetic_instrument
from emp_pipeline.domain.timeframes import Timeframe

NEW_YEAR_2024_MINUTES = 28_401_120  # 2024-01-01T00:00:00Z = 1,704,067,200 s / 60


def test_market_data_payload_types_and_periods_match_the_protocol_definitions() -> None:
    assert (proto.PayloadType.GET_TRENDBARS_REQ, proto.PayloadType.GET_TRENDBARS_RES) == (2137, 2138)
    assert (proto.PayloadType.SUBSCRIBE_SPOTS_REQ, proto.PayloadType.SUBSCRIBE_SPOTS_RES) == (2127, 2128)
    assert (proto.PayloadType.UNSUBSCRIBE_SPOTS_REQ, proto.PayloadType.UNSUBSCRIBE_SPOTS_RES) == (2129, 2130)
    assert proto.PayloadType.SPOT_EVENT == 2131
    assert [proto.TrendbarPeriod[name] for name in ("M1", "M5", "M15", "M30", "H1", "H4", "D1", "W1")] == [
        1,
        5,
        7,
        8,
        9,
        10,
        12,
        13,
    ]
    assert (proto.DayOfWeek.MONDAY, proto.DayOfWeek.WEDNESDAY, proto.DayOfWeek.SUNDAY) == (1, 3, 7)


def test_a_trendbar_decodes_from_low_plus_deltas_in_hundred_thousandths() -> None:
    raw = {
        "low": 108_123,
        "deltaOpen": 45,
        "deltaClose": 120,
        "deltaHigh": 300,
        "volume": 812,
        "utcTimestampInMinutes": NEW_YEAR_2024_MINUTES,
    }
    bar = proto.decode_trendbar(raw, digits=5)
    # by hand: low 1.08123; open 1.08123 + 0.00045; close + 0.00120; high + 0.00300
    assert (bar.open, bar.high, bar.low, bar.close) == (1.08168, 1.08423, 1.08123, 1.08243)
    assert bar.volume == 812
    assert bar.open_time_ms == 1_704_067_200_000  # the bar's open time, 2024-01-01 00:00 UTC


@pytest.mark.parametrize(
    ("raw", "digits", "expected"),
    [
        # USDJPY, 3 digits: 151.200 .. 151.215
        ({"low": 15_120_000, "deltaOpen": 500, "deltaClose": 1_000, "deltaHigh": 1_500}, 3,
         (151.205, 151.215, 151.2, 151.21)),
        # XAUUSD, 2 digits: 2650.10 .. 2652.35
        ({"low": 265_010_000, "deltaOpen": 25_000, "deltaClose": 200_000, "deltaHigh": 225_000}, 2,
         (2650.35, 2652.35, 2650.1, 2652.1)),
        # zero deltas may be left out of a JSON frame: open = close = high = low
        ({"low": 108_500}, 5, (1.085, 1.085, 1.085, 1.085)),
    ],
)  # fmt: skip
def test_trendbars_round_to_the_symbols_digits(
    raw: dict[str, int], digits: int, expected: tuple[float, float, float, float]
) -> None:
    bar = proto.decode_trendbar({**raw, "utcTimestampInMinutes": NEW_YEAR_2024_MINUTES}, digits)
    assert (bar.open, bar.high, bar.low, bar.close) == expected
    assert bar.volume == 0


@pytest.mark.parametrize(
    "raw",
    [
        {"deltaHigh": 5, "utcTimestampInMinutes": 1},  # no low
        {"low": 100_000, "deltaHigh": 5},  # no time
        {"low": 100_000, "deltaOpen": 9, "deltaHigh": 5, "utcTimestampInMinutes": 1},  # open above high
        {"low": 100_000, "deltaClose": 6, "deltaHigh": 5, "utcTimestampInMinutes": 1},  # close above high
        {"low": 0, "utcTimestampInMinutes": 1},
    ],
)
def test_a_malformed_trendbar_is_refused(raw: dict[str, int]) -> None:
    with pytest.raises(proto.MalformedFrameError, match="trendbar"):
        proto.decode_trendbar(raw, digits=5)


def test_request_windows_cover_the_range_without_overlap_and_within_the_servers_limit() -> None:
    day_ms = 86_400_000
    windows = proto.trendbar_windows(proto.TrendbarPeriod.M5, 0, 10 * day_ms)
    assert windows[0][0] == 0 and windows[-1][1] == 10 * day_ms
    assert all(high - low <= 302_400_000 for low, high in windows)
    assert all(after[0] == before[1] + 1 for before, after in itertools.pairwise(windows))
    assert len(windows) == 3  # 3.5 days per request
    assert proto.trendbar_windows(proto.TrendbarPeriod.H1, 0, 200 * day_ms) == [(0, 200 * day_ms)]
    with pytest.raises(ValueError, match="before"):
        proto.trendbar_windows(proto.TrendbarPeriod.H1, 10, 5)


def test_trendbar_frame_labels_each_bar_with_its_open_time_in_utc() -> None:
    raws = [{"low": 108_000 + i, "utcTimestampInMinutes": NEW_YEAR_2024_MINUTES + 60 * i} for i in range(3)]
    bars = [proto.decode_trendbar(raw, 5) for raw in raws]
    frame = trendbar_frame(bars)
    assert list(frame.columns) == ["time", "open", "high", "low", "close", "volume"]
    assert list(frame["time"]) == [pd.Timestamp(f"2024-01-01 0{h}:00", tz="UTC") for h in range(3)]
    assert list(frame["low"]) == [1.08, 1.08001, 1.08002]


def _labelled(open_times: list[str], timeframe: Timeframe = Timeframe.D1) -> pd.DataFrame:
    raws = [
        {"low": 108_000 + 10 * i, "deltaOpen": 1, "deltaClose": 2, "deltaHigh": 3, "volume": 100 + i,
         "utcTimestampInMinutes": int(pd.Timestamp(opened, tz="UTC").timestamp()) // 60}
        for i, opened in enumerate(open_times)
    ]  # fmt: skip
    return labelled_bars(trendbar_frame([proto.decode_trendbar(raw, 5) for raw in raws]), timeframe)


def test_daily_bars_opening_at_17_new_york_are_labelled_with_the_next_trading_day() -> None:
    bars = _labelled(["2024-01-07 22:00", "2024-03-10 21:00", "2024-07-11 21:00"])  # EST, first EDT day, EDT
    assert list(bars["date"]) == [
        pd.Timestamp(day, tz="UTC") for day in ("2024-01-08", "2024-03-11", "2024-07-12")
    ]
    assert list(bars["close"]) == [1.08002, 1.08012, 1.08022]


def test_a_weekend_stub_of_a_midnight_utc_broker_is_folded_into_the_next_trading_day() -> None:
    # Friday, the Sunday-evening stub (opens Sunday 00:00 UTC), Monday
    bars = _labelled(["2024-01-05 00:00", "2024-01-07 00:00", "2024-01-08 00:00"])
    assert list(bars["date"]) == [pd.Timestamp(day, tz="UTC") for day in ("2024-01-05", "2024-01-08")]
    monday = bars.iloc[1]
    assert (monday["open"], monday["close"]) == (1.08011, 1.08022)  # stub's open, Monday's close
    assert (monday["low"], monday["high"], monday["volume"]) == (1.0801, 1.08023, 101.0 + 102.0)


def test_intraday_bars_are_labelled_by_open_time_and_weekly_by_the_monday_of_their_week() -> None:
    hourly = _labelled(["2024-01-08 13:00", "2024-01-08 14:00"], Timeframe.H1)
    assert list(hourly["date"]) == [pd.Timestamp(f"2024-01-08 {h}:00", tz="UTC") for h in (13, 14)]
    weekly = _labelled(["2024-01-07 22:00", "2024-07-14 21:00"], Timeframe.W1)  # Sunday 17:00 New York
    assert list(weekly["date"]) == [pd.Timestamp(day, tz="UTC") for day in ("2024-01-08", "2024-07-15")]


def _eurusd_from_universe() -> InstrumentMeta:
    """Terms a universe file might carry before the venue is asked: cent ticks, one-unit lots."""
    return synthetic_instrument("EURUSD", name="Euro / US dollar", asset_class=AssetClass.FX)


def test_venue_terms_replace_the_universes_in_units_not_cents() -> None:
    venue = CTraderSymbol(
        1, "EURUSD", 5, 4, 10_000_000, 100_000, 10_000_000_000, 100_000,  # volumes in cents
        swap_long=-6.87, swap_short=2.1, swap_rollover_3days=proto.DayOfWeek.THURSDAY,
        swap_calculation_type=1,
    )  # fmt: skip
    meta = apply_venue_terms(_eurusd_from_universe(), venue)
    assert (meta.tick_size, meta.pip_position) == (pytest.approx(0.00001), 4)
    assert (meta.lot_size, meta.min_volume, meta.step_volume) == (100_000.0, 1_000.0, 1_000.0)
    assert (meta.asset_class, meta.name, meta.calendar) == (AssetClass.FX, "Euro / US dollar", "24x5")
    assert (meta.swap_long, meta.swap_short) == (-6.87, 2.1)
    assert (meta.swap_type, meta.swap_triple_weekday) == (SwapType.PERCENT, Weekday.THURSDAY)

    silent = CTraderSymbol(1, "EURUSD", 5, 4, None, None, None, None)
    partial = apply_venue_terms(
        _eurusd_from_universe(), silent
    )  # the venue left them out: the universe's stay
    assert (partial.lot_size, partial.min_volume, partial.swap_long) == (1.0, 1.0, 0.0)
    assert (partial.swap_type, partial.swap_triple_weekday) == (SwapType.PIPS, Weekday.WEDNESDAY)


def test_venue_terms_the_project_cannot_use_are_refused_by_name() -> None:
    venue = CTraderSymbol(1, "EURUSD", 2, 4, None, None, None, None)  # 2 digits, pip at the 4th
    with pytest.raises(MalformedDataError, match=r"'EURUSD'.*pip_position"):
        apply_venue_terms(_eurusd_from_universe(), venue)  # a pip (0.0001) finer than the tick (0.01)


def test_a_spread_sample_reports_the_latest_and_the_typical_spread() -> None:
    at = datetime(2024, 1, 8, tzinfo=UTC)
    sample = SpreadSample(
        "EURUSD",
        digits=5,
        pip_position=4,
        quotes=(SpotQuote(1.085, 1.0851, at), SpotQuote(1.0852, 1.0855, at), SpotQuote(1.0851, 1.0853, at)),
    )
    assert (sample.bid, sample.ask) == (1.0851, 1.0853)
    assert sample.spread == 0.0002
    assert sample.spread_pips == pytest.approx(2.0)
    assert (sample.median_spread, sample.max_spread) == (0.0002, 0.0003)
