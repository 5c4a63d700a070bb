"""Bars, instrument terms and spreads from the venue the live job trades: the cTrader Open API.

Research and live decisions then see the prices the orders meet. Everything goes through the project's one
asyncio client (broker/ctrader_client.py: auth, heartbeats, reconnects, token refresh, rate limits); this
module only turns its answers into the project's shapes. Each public call opens one session, does its work
and closes it, so a Dagster op or the CLI can call it without owning an event loop.

What the venue sends, and what becomes of it:
- Trendbars are BID prices, delta-encoded in 1/100000 of a price unit and decoded to the symbol's digits.
  A bar's time is its open time (UTC). Volume is a tick count, not traded units.
- Intraday bars are labelled by their open time, as the canonical frame wants. A D1 bar opens at the
  broker's day boundary: 17:00 New York (21:00/22:00 UTC the evening before) or, with some brokers, midnight
  UTC. Either way it is labelled with the FX trading day its open falls in (the day ending 17:00 New York,
  `calendars.trading_day_of`); a short bar opening on the weekend (a Sunday evening stub of a midnight-UTC
  broker) is folded into the next trading day's bar. A W1 bar is labelled with the Monday of its week.
- The newest bar may still be forming: only bars closed by `now` are returned (D1 and W1 bars get an hour
  more, since New York's daylight saving moves the broker's day boundary by one).
- Symbol details give digits, pip position, lot size and volumes in cents of a unit (divided by 100 here),
  and the overnight swaps with their unit and triple weekday.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

import pandas as pd

from emp_pipeline.broker import ctrader_protocol as proto
from emp_pipeline.broker.ctrader_client import (
    CTraderApiError,
    CTraderClient,
    CTraderClientStats,
    CTraderConfig,
    CTraderSymbol,
    SpreadSample,
)
from emp_pipeline.broker.interface import (
    AccessTokenProvider,
    BrokerAuthError,
    BrokerConnectionError,
    BrokerError,
    SymbolNotFoundError,
)
from emp_pipeline.data.source import (
    MalformedDataError,
    MarketDataError,
    MarketDataSource,
    NoDataError,
    SourceUnavailableError,
    UnknownSymbolError,
    concat_bars,
)
from emp_pipeline.domain.calendars import CALENDAR_24X5, trading_day_of
from emp_pipeline.domain.instruments import InstrumentMeta, SwapType, UniverseError, Weekday
from emp_pipeline.domain.timeframes import Timeframe

T = TypeVar("T")

TRENDBAR_COLUMNS = ("time", "open", "high", "low", "close", "volume")
_SWAP_TYPES = {0: SwapType.PIPS, 1: SwapType.PERCENT}  # ProtoOASwapCalculationType


def trendbar_frame(bars: Sequence[proto.Trendbar]) -> pd.DataFrame:
    """Decoded bars as a frame: `time` is the open time (UTC), prices are bid, volume is ticks."""
    return pd.DataFrame(
        {
            "time": pd.to_datetime([bar.open_time_ms for bar in bars], unit="ms", utc=True).astype(
                "datetime64[ns, UTC]"
            ),
            "open": [bar.open for bar in bars],
            "high": [bar.high for bar in bars],
            "low": [bar.low for bar in bars],
            "close": [bar.close for bar in bars],
            "volume": [float(bar.volume) for bar in bars],
        },
        columns=list(TRENDBAR_COLUMNS),
    )


def labelled_bars(bars: pd.DataFrame, timeframe: Timeframe) -> pd.DataFrame:
    """Trendbars (`trendbar_frame`) -> bars with the canonical `date` label of `timeframe`.

    Intraday: the open time. D1: the FX trading day of the open, at midnight UTC; W1: that day's Monday. A
    weekend bar has no trading day of its own: it is folded into the next one (open from the first bar, high
    and low over both, close from the last, volumes added); one left at the very end is dropped until its
    trading day's bar exists.
    """
    if timeframe.is_intraday:
        return bars.rename(columns={"time": "date"})
    days = pd.Series(trading_day_of(CALENDAR_24X5, bars["time"]), index=bars.index).bfill()
    if timeframe is Timeframe.W1:
        days = days - pd.to_timedelta(days.dt.day_of_week, unit="D")
    labelled = bars.assign(date=days).dropna(subset=["date"])
    return (
        labelled.groupby("date", sort=True)
        .agg(
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", "sum"),
        )
        .reset_index()
    )


def apply_venue_terms(meta: InstrumentMeta, symbol: CTraderSymbol) -> InstrumentMeta:
    """The instrument with the venue's trading terms in place of the universe's (volumes cents -> units).

    Terms the venue leaves out keep the universe's value; the asset class, quote currency and calendar
    always come from the universe, since the venue names them in its own, broker-specific words.
    """

    def units(volume: int | None, current: float) -> float:
        return current if volume is None else proto.volume_to_units(int(volume))

    swap_type = meta.swap_type
    if symbol.swap_calculation_type is not None:
        if symbol.swap_calculation_type not in _SWAP_TYPES:
            raise MalformedDataError(
                f"cTrader symbol {symbol.name!r}: unknown swapCalculationType {symbol.swap_calculation_type}",
                symbol=meta.symbol,
            )
        swap_type = _SWAP_TYPES[symbol.swap_calculation_type]
    triple = meta.swap_triple_weekday
    if symbol.swap_rollover_3days not in (None, proto.DayOfWeek.NONE):
        triple = Weekday(symbol.swap_rollover_3days - 1)  # the protocol counts Monday as 1
    try:
        return replace(
            meta,
            tick_size=10.0 ** (-symbol.digits),
            pip_position=symbol.pip_position,
            lot_size=units(symbol.lot_size, meta.lot_size),
            min_volume=units(symbol.min_volume, meta.min_volume),
            step_volume=units(symbol.step_volume, meta.step_volume),
            swap_long=meta.swap_long if symbol.swap_long is None else symbol.swap_long,
            swap_short=meta.swap_short if symbol.swap_short is None else symbol.swap_short,
            swap_type=swap_type,
            swap_triple_weekday=triple,
        )
    except UniverseError as error:
        raise MalformedDataError(
            f"cTrader symbol {symbol.name!r} has terms the project cannot use: {error}", symbol=meta.symbol
        ) from error


@dataclass(frozen=True)
class CTraderAccess:
    """What reading one cTrader account takes: the connection settings and where access tokens come from."""

    config: CTraderConfig
    tokens: AccessTokenProvider


class CTraderSource(MarketDataSource):
    """Bars, instrument terms and spreads of one cTrader account.

    `symbol_map` maps the project's symbols to the broker's names where they differ (e.g. GOLD -> XAUUSD).
    `timeframe` is the bar size `fetch` returns (the canonical frame holds D1 bars); `trendbars` takes any.
    """

    name = "ctrader"

    def __init__(
        self,
        config: CTraderConfig,
        token_provider: AccessTokenProvider,
        *,
        timeframe: Timeframe = Timeframe.D1,
        symbol_map: Mapping[str, str] | None = None,
        session_timeout_s: float = 3_600.0,
        now: Callable[[], pd.Timestamp] = lambda: pd.Timestamp.now(tz="UTC"),
    ) -> None:
        self.config = config
        self.timeframe = timeframe
        self.stats = CTraderClientStats()  # of the latest session: requests, reconnects, rate-limit waits
        self._tokens = token_provider
        self._to_broker = dict(symbol_map or {})
        self._session_timeout_s = session_timeout_s
        self._now = now

    def broker_symbol(self, symbol: str) -> str:
        return self._to_broker.get(symbol, symbol)

    # ----- bars ----
    def _fetch_raw(self, symbols: list[str], start: date, end: date) -> pd.DataFrame:
        first = datetime(start.year, start.month, start.day, tzinfo=UTC)
        last = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
        if not self.timeframe.is_intraday:
            # A D1 or W1 bar may open the evening (or the weekend) before the day it is labelled with.
            first -= timedelta(days=3)
        timeframe = self.timeframe
        per_symbol = self._run(lambda client: self._trendbars_of(client, symbols, first, last, timeframe))
        labelled = [
            labelled_bars(bars, timeframe).assign(symbol=symbol) for symbol, bars in per_symbol.items()
        ]
        return concat_bars([bars.assign(adj_close=bars["close"]) for bars in labelled])

    def trendbars(
        self, symbol: str, start: datetime, end: datetime, timeframe: Timeframe | None = None
    ) -> pd.DataFrame:
        """Closed bars of one symbol opening in [start, end) (aware datetimes), oldest first, one per time."""
        wanted = timeframe or self.timeframe
        return self._run(lambda client: self._trendbars_of(client, [symbol], start, end, wanted))[symbol]

    async def _trendbars_of(
        self,
        client: CTraderClient,
        symbols: Sequence[str],
        start: datetime,
        end: datetime,
        timeframe: Timeframe,
    ) -> dict[str, pd.DataFrame]:
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError(f"start and end must be timezone-aware, got {start!r} and {end!r}")
        if end <= start:
            raise ValueError(f"end {end.isoformat()} is not after start {start.isoformat()}")
        period = proto.TrendbarPeriod(timeframe.trendbar_period)
        from_ms, to_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000) - 1
        # the latest bar may still be forming; daily and weekly ones close up to an hour late (DST)
        grace = pd.Timedelta(0) if timeframe.is_intraday else pd.Timedelta(hours=1)
        closed_before_ms = int((self._now() - pd.Timedelta(timeframe.duration) - grace).timestamp() * 1000)
        frames = {}
        for symbol in symbols:
            received = await client.trendbars(self.broker_symbol(symbol), period, from_ms, to_ms)
            bars = [bar for bar in received if bar.open_time_ms <= closed_before_ms]
            if not bars:
                raise NoDataError(
                    f"cTrader has no {timeframe} bars of {symbol!r} (broker symbol "
                    f"{self.broker_symbol(symbol)!r}) opening in {start.isoformat()} .. {end.isoformat()}; "
                    "the market was closed, or the account's history does not reach back that far",
                    symbol=symbol,
                )
            frames[symbol] = trendbar_frame(bars)
        return frames

    # ----- instrument terms ----
    def symbol_details(self, symbols: Sequence[str]) -> dict[str, CTraderSymbol]:
        """The venue's own terms per symbol (volumes still in cents of a unit, as the protocol gives them)."""

        async def details(client: CTraderClient) -> dict[str, CTraderSymbol]:
            return {symbol: await client.symbol(self.broker_symbol(symbol)) for symbol in symbols}

        return self._run(details)

    def instruments(self, instruments: Sequence[InstrumentMeta]) -> tuple[InstrumentMeta, ...]:
        """Each instrument with the venue's current trading terms (see `apply_venue_terms`)."""
        details = self.symbol_details([meta.symbol for meta in instruments])
        return tuple(apply_venue_terms(meta, details[meta.symbol]) for meta in instruments)

    # ----- spreads ----
    def sample_spreads(
        self, symbols: Sequence[str], *, duration_s: float = 0.0, timeout_s: float = 10.0
    ) -> dict[str, SpreadSample]:
        """Bid, ask and spread per symbol from spot events (the latest; over `duration_s` also typical)."""

        async def sample(client: CTraderClient) -> dict[str, SpreadSample]:
            names = {symbol: self.broker_symbol(symbol) for symbol in symbols}
            by_broker = await client.sample_spreads(
                list(names.values()), duration_s=duration_s, timeout_s=timeout_s
            )
            return {symbol: replace(by_broker[name], symbol=symbol) for symbol, name in names.items()}

        return self._run(sample)

    # ----- one session per call ----
    def _run(self, work: Callable[[CTraderClient], Awaitable[T]]) -> T:
        async def session() -> T:
            client = CTraderClient(self.config, self._tokens)
            self.stats = client.stats
            try:
                return await asyncio.wait_for(work(client), self._session_timeout_s)
            finally:
                await client.close()

        try:
            return asyncio.run(session())
        except SymbolNotFoundError as error:
            raise UnknownSymbolError(f"{self.name}: {error}") from error
        except BrokerAuthError as error:
            raise MarketDataError(f"{self.name}: {error}") from error
        except proto.MalformedFrameError as error:
            raise MalformedDataError(f"{self.name}: {error}") from error
        except CTraderApiError as error:
            if error.code == proto.BLOCKED_PAYLOAD_TYPE:
                raise SourceUnavailableError(
                    f"{self.name}: rate limited after {self.config.max_rate_limit_retries} waits: {error}"
                ) from error
            raise MarketDataError(f"{self.name}: {error}") from error
        except (BrokerConnectionError, TimeoutError) as error:
            raise SourceUnavailableError(
                f"{self.name}: {error or f'no result within {self._session_timeout_s} s'}"
            ) from error
        except BrokerError as error:
            raise MarketDataError(f"{self.name}: {error}") from error
