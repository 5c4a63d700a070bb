"""cTrader market data against the local cTrader protocol server: paging, resume, pacing, terms, spreads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from emp_pipeline.broker import ctrader_protocol as proto
from emp_pipeline.data.ctrader import CTraderSource
from emp_pipeline.data.source import MarketDataError, NoDataError, UnknownSymbolError
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta, SwapType, Weekday
from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline_tests.fakes.ctrader_server import (
    ACCOUNT_AUTH_REQ,
    APP_AUTH_REQ,
    GET_TRENDBARS_REQ,
    UNSUBSCRIBE_SPOTS_REQ,
    FakeCTraderServer,
    FakeTokenProvider,
)
from emp_pipeline_tests.integration.ctrader_fixtures import ACCOUNT, fast_config

M5 = Timeframe.M5
M5_CODE = 5  # ProtoOATrendbarPeriod.M5, as the server stores it
START = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
END = START + timedelta(days=14)


def source_for(server: FakeCTraderServer, tokens: FakeTokenProvider, **config: object) -> CTraderSource:
    """A source that does not pace its own history requests unless a test asks: the server limit is tested."""
    config = {"max_history_requests_per_second": 1_000.0, **config}
    return CTraderSource(fast_config(server, **config), tokens)


def served_frame(raw_bars: list[dict[str, int]], digits: int = 5) -> pd.DataFrame:
    """What the client should decode, computed here from the served integers, independently of the client."""
    scale = 100_000
    return pd.DataFrame(
        {
            "time": pd.to_datetime(
                [bar["utcTimestampInMinutes"] * 60 for bar in raw_bars], unit="s", utc=True
            ),
            "open": [round((bar["low"] + bar["deltaOpen"]) / scale, digits) for bar in raw_bars],
            "high": [round((bar["low"] + bar["deltaHigh"]) / scale, digits) for bar in raw_bars],
            "low": [round(bar["low"] / scale, digits) for bar in raw_bars],
            "close": [round((bar["low"] + bar["deltaClose"]) / scale, digits) for bar in raw_bars],
            "volume": [float(bar["volume"]) for bar in raw_bars],
        }
    ).astype({"time": "datetime64[ns, UTC]"})


def requested_windows(server: FakeCTraderServer) -> list[tuple[int, int]]:
    return [(r["fromTimestamp"], r["toTimestamp"]) for r in server.requests_of_type(GET_TRENDBARS_REQ)]


@pytest.fixture
def server() -> Iterator[FakeCTraderServer]:
    with FakeCTraderServer(
        account_ids=(ACCOUNT,), max_trendbars_per_response=300, max_history_requests_per_second=1_000
    ) as running:
        yield running


@pytest.fixture
def tokens(server: FakeCTraderServer) -> FakeTokenProvider:
    return FakeTokenProvider(server)


@pytest.mark.parametrize("page_from", ["oldest", "newest"])
def test_history_is_paged_over_windows_and_capped_answers_to_every_bar_once(
    page_from: str, tokens: FakeTokenProvider, server: FakeCTraderServer
) -> None:
    server.trendbar_page_from = page_from  # the docs do not say which end of a capped window is sent
    served = server.generate_trendbars("EURUSD", M5_CODE, START, END)

    bars = source_for(server, tokens).trendbars("EURUSD", START, END, M5)

    pd.testing.assert_frame_equal(bars, served_frame(served))
    assert bars["time"].is_monotonic_increasing and bars["time"].is_unique
    windows = requested_windows(server)
    assert all(high - low <= 302_400_000 for low, high in windows)  # M5: 3.5 days per request at most
    span_ms = int((END - START).total_seconds() * 1000)
    assert len(windows) > len(proto.trendbar_windows(proto.TrendbarPeriod.M5, 0, span_ms))  # capped answers
    assert server.history_requests_answered == len(windows)


def test_a_disconnect_mid_history_resumes_with_the_window_cut_off_without_gaps_or_duplicates(
    tokens: FakeTokenProvider, server: FakeCTraderServer
) -> None:
    served = server.generate_trendbars("EURUSD", M5_CODE, START, END)
    server.drop_connection_on_history_request(after=5)
    source = source_for(server, tokens)

    bars = source.trendbars("EURUSD", START, END, M5)

    pd.testing.assert_frame_equal(bars, served_frame(served))
    assert server.connections_opened == 2 and source.stats.connections == 2
    assert len(server.requests_of_type(APP_AUTH_REQ)) == 2  # application and account auth again
    assert len(server.requests_of_type(ACCOUNT_AUTH_REQ)) == 2
    windows = requested_windows(server)
    assert windows[6] == windows[5]  # the unanswered request is the one asked again, after reconnecting
    assert len(set(windows)) == len(windows) - 1  # and nothing received before is asked for twice


def test_a_disconnect_right_after_an_answer_continues_after_the_last_bar_received(
    tokens: FakeTokenProvider, server: FakeCTraderServer
) -> None:
    served = server.generate_trendbars("EURUSD", M5_CODE, START, END)
    server.drop_connection_on_history_request(after=2, answer_first=True)
    source = source_for(server, tokens)

    bars = source.trendbars("EURUSD", START, END, M5)

    pd.testing.assert_frame_equal(bars, served_frame(served))
    assert source.stats.connections == 2
    windows = requested_windows(server)
    assert len(set(windows)) == len(windows)  # the answered page is not fetched again
    cut_page_end = max(bar["utcTimestampInMinutes"] for bar in served[:900]) * 60_000  # 3 answers of 300
    assert windows[3][0] == cut_page_end + 1


def test_history_requests_are_paced_under_five_a_second(tokens: FakeTokenProvider) -> None:
    with FakeCTraderServer(account_ids=(ACCOUNT,), max_trendbars_per_response=200) as server:  # 5/s
        provider = FakeTokenProvider(server)
        server.generate_trendbars("EURUSD", M5_CODE, START, START + timedelta(days=7))
        source = source_for(server, provider, max_history_requests_per_second=4.0)  # the default

        started = time.monotonic()
        bars = source.trendbars("EURUSD", START, START + timedelta(days=7), M5)
        elapsed = time.monotonic() - started

        requests = len(requested_windows(server))
        assert requests >= 7 and len(bars) == 1_440  # 5 trading days x 288 five-minute bars
        assert server.blocked_responses == 0
        assert elapsed >= (requests - 1) / 4.0 * 0.95


def test_a_client_faster_than_the_limit_waits_out_retry_after_and_still_gets_everything(
    tokens: FakeTokenProvider,
) -> None:
    with FakeCTraderServer(account_ids=(ACCOUNT,), max_trendbars_per_response=300, retry_after_s=1) as server:
        provider = FakeTokenProvider(server)
        served = server.generate_trendbars("EURUSD", M5_CODE, START, START + timedelta(days=7))
        source = source_for(server, provider, max_history_requests_per_second=100.0)

        bars = source.trendbars("EURUSD", START, START + timedelta(days=7), M5)

        pd.testing.assert_frame_equal(bars, served_frame(served))
        assert server.blocked_responses >= 1 and source.stats.rate_limit_backoffs == server.blocked_responses


def test_a_rate_limit_answer_is_retried_only_after_retry_after(
    tokens: FakeTokenProvider, server: FakeCTraderServer
) -> None:
    server.retry_after_s = 1
    served = server.generate_trendbars("EURUSD", M5_CODE, START, START + timedelta(days=3))
    server.block_next_history_requests(1)
    source = source_for(server, tokens)

    started = time.monotonic()
    bars = source.trendbars("EURUSD", START, START + timedelta(days=3), M5)

    assert time.monotonic() - started >= 1.0
    pd.testing.assert_frame_equal(bars, served_frame(served))
    # a retry before retryAfter would have been blocked again (the server blocks the type for that long)
    assert server.blocked_responses == 1 and source.stats.rate_limit_backoffs == 1


def test_daily_bars_come_as_the_canonical_frame_labelled_by_fx_trading_day(
    tokens: FakeTokenProvider, server: FakeCTraderServer
) -> None:
    opens = [datetime(2024, 1, day, 22, tzinfo=UTC) for day in (7, 8, 9, 10, 11)]  # Sun..Thu 17:00 New York
    server.add_trendbars(
        "EURUSD",
        proto.TrendbarPeriod.D1,
        [
            {
                "utcTimestampInMinutes": int(opened.timestamp()) // 60,
                "low": 108_000 + i,
                "deltaOpen": 10,
                "deltaClose": 20,
                "deltaHigh": 30,
                "volume": 5_000,
            }
            for i, opened in enumerate(opens)
        ],
    )

    bars = source_for(server, tokens).fetch(["EURUSD"], "2024-01-08", "2024-01-12")

    assert list(bars["date"]) == list(pd.date_range("2024-01-08", "2024-01-12", tz="UTC"))  # Mon..Fri
    assert list(bars["close"]) == [1.0802, 1.08021, 1.08022, 1.08023, 1.08024]
    assert (bars["adj_close"] == bars["close"]).all() and (bars["symbol"] == "EURUSD").all()
    assert list(bars["low"]) == [1.08, 1.08001, 1.08002, 1.08003, 1.08004]  # bid prices as served


def test_intraday_bars_come_as_the_canonical_frame_by_open_time_without_the_forming_bar(
    tokens: FakeTokenProvider, server: FakeCTraderServer
) -> None:
    monday = datetime(2024, 1, 8, tzinfo=UTC)
    served = server.generate_trendbars("EURUSD", 9, monday, monday + timedelta(hours=6))  # H1, 00:00..05:00
    source = CTraderSource(
        fast_config(server),
        tokens,
        timeframe=Timeframe.H1,
        now=lambda: pd.Timestamp("2024-01-08 05:30", tz="UTC"),
    )

    bars = source.fetch(["EURUSD"], "2024-01-08", "2024-01-09")

    expected = served_frame(served[:5])  # the 05:00 bar is still forming at 05:30
    assert list(bars["date"]) == list(expected["time"])
    assert list(bars["close"]) == list(expected["close"]) and list(bars["volume"]) == list(expected["volume"])


def test_symbol_details_become_the_instruments_trading_terms(
    tokens: FakeTokenProvider, server: FakeCTraderServer
) -> None:
    guessed = [
        InstrumentMeta("EURUSD", "EURUSD", AssetClass.FX, "USD", 0.01, 2, 1.0, 1.0, 1.0, "24x5"),
        InstrumentMeta("XAUUSD", "Gold", AssetClass.METAL, "USD", 0.1, 1, 1.0, 1.0, 1.0, "24x5"),
    ]
    source = source_for(server, tokens)

    eurusd, gold = source.instruments(guessed)
    details = source.symbol_details(["EURUSD"])["EURUSD"]

    assert (eurusd.tick_size, eurusd.pip_position) == (pytest.approx(0.00001), 4)
    assert (eurusd.lot_size, eurusd.min_volume, eurusd.step_volume) == (100_000.0, 1_000.0, 1_000.0)
    assert (gold.tick_size, gold.pip_position) == (pytest.approx(0.01), 1)
    assert (gold.lot_size, gold.min_volume, gold.step_volume) == (100.0, 1.0, 1.0)
    assert (gold.asset_class, gold.name) == (AssetClass.METAL, "Gold")
    assert (eurusd.swap_long, eurusd.swap_short, eurusd.swap_type) == (-6.87, 2.1, SwapType.PIPS)
    assert eurusd.swap_triple_weekday is Weekday.WEDNESDAY
    assert (details.swap_long, details.swap_short) == (-6.87, 2.1)
    assert details.swap_rollover_3days is proto.DayOfWeek.WEDNESDAY
    assert details.max_volume == 10_000_000_000


def test_spreads_are_sampled_from_spot_events_then_unsubscribed(
    tokens: FakeTokenProvider, server: FakeCTraderServer
) -> None:
    source = source_for(server, tokens)

    now = source.sample_spreads(["EURUSD", "USDJPY"])
    assert (now["EURUSD"].bid, now["EURUSD"].ask, now["EURUSD"].spread) == (1.085, 1.0851, 0.0001)
    assert now["EURUSD"].spread_pips == pytest.approx(1.0)
    assert (now["USDJPY"].bid, now["USDJPY"].spread) == (151.2, 0.015)

    widen = threading.Timer(0.2, lambda: server.push_spot("EURUSD", ask=1.0854))  # an ask-only event
    widen.start()
    over_time = source.sample_spreads(["EURUSD"], duration_s=0.6)["EURUSD"]
    widen.join()
    assert (over_time.bid, over_time.ask, over_time.spread) == (1.085, 1.0854, 0.0004)
    assert over_time.max_spread == 0.0004 and len(over_time.quotes) == 2
    assert len(server.requests_of_type(UNSUBSCRIBE_SPOTS_REQ)) == 2


def test_an_unknown_symbol_is_named(tokens: FakeTokenProvider, server: FakeCTraderServer) -> None:
    with pytest.raises(UnknownSymbolError, match=r"'GBPCHF'.*EURUSD"):
        source_for(server, tokens).trendbars("GBPCHF", START, END, M5)


def test_a_range_without_bars_is_no_data_naming_symbol_period_and_range(
    tokens: FakeTokenProvider, server: FakeCTraderServer
) -> None:
    with pytest.raises(NoDataError, match=r"M5 bars of 'EURUSD'.*2024-01-01"):
        source_for(server, tokens).trendbars("EURUSD", START, END, M5)


def test_refused_application_credentials_say_what_to_check(
    tokens: FakeTokenProvider, server: FakeCTraderServer
) -> None:
    with pytest.raises(MarketDataError, match="CTRADER_CLIENT_ID"):
        source_for(server, tokens, client_secret="wrong").trendbars("EURUSD", START, END, M5)
