"""What the pipeline trades: instrument metadata, universes loaded from YAML, and trading calendars.

The metadata is what sizing, rounding and order submission need (tick size, pip position, lot size,
minimum and step volume) and what calendar checks need (which days a bar is expected). Universe files are
validated strictly at load time, so a typo fails at startup with the entry and field named, not as a bad
order or a silent gap weeks later.

Volumes are in units of the instrument (base currency for FX, ounces for metals, shares for equities and
ETFs, contracts for indices and energy, coins for crypto); `lot_size` is how many units make one lot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import exchange_calendars
import pandas as pd
import yaml

CALENDAR_24X5 = "24x5"
CALENDAR_24X7 = "24x7"
ROUND_THE_CLOCK_CALENDARS = (CALENDAR_24X5, CALENDAR_24X7)


class UniverseError(ValueError):
    """A universe file or an instrument definition is invalid; the message names the entry and field."""


class AssetClass(StrEnum):
    FX = "fx"
    INDEX = "index"
    ETF = "etf"
    EQUITY = "equity"
    METAL = "metal"
    ENERGY = "energy"
    CRYPTO = "crypto"


def is_known_calendar(calendar: str) -> bool:
    return calendar in ROUND_THE_CLOCK_CALENDARS or calendar in _exchange_calendar_names()


@lru_cache(maxsize=1)
def _exchange_calendar_names() -> frozenset[str]:
    return frozenset(exchange_calendars.get_calendar_names(include_aliases=True))


@dataclass(frozen=True)
class InstrumentMeta:
    """One tradable instrument; construction validates values so no invalid instance exists."""

    symbol: str
    name: str
    asset_class: AssetClass
    quote_currency: str
    tick_size: float
    pip_position: int
    lot_size: float
    min_volume: float
    step_volume: float
    calendar: str

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not self.symbol.strip() or self.symbol != self.symbol.strip():
            raise UniverseError(
                f"field 'symbol': must be a non-empty string without surrounding spaces, got {self.symbol!r}"
            )
        if not isinstance(self.asset_class, AssetClass):
            raise UniverseError(f"field 'asset_class': must be an AssetClass, got {self.asset_class!r}")
        currency = self.quote_currency
        if not (
            isinstance(currency, str) and len(currency) == 3 and currency.isalpha() and currency.isupper()
        ):
            raise UniverseError(
                f"field 'quote_currency': must be a 3-letter upper-case code, got {currency!r}"
            )
        for field_name in ("tick_size", "lot_size", "min_volume", "step_volume"):
            value = getattr(self, field_name)
            if not math.isfinite(value) or value <= 0:
                raise UniverseError(f"field {field_name!r}: must be a positive number, got {value!r}")
        if not 0 <= self.pip_position <= 10:
            raise UniverseError(
                f"field 'pip_position': must be an integer in 0..10, got {self.pip_position!r}"
            )
        if self.pip_size < self.tick_size * (1 - 1e-9):
            raise UniverseError(
                f"field 'pip_position': a pip (10^-{self.pip_position} = {self.pip_size:g}) smaller than "
                f"the tick size {self.tick_size:g} is almost certainly a typo"
            )
        if not is_known_calendar(self.calendar):
            raise UniverseError(
                f"field 'calendar': unknown calendar {self.calendar!r}; use '24x5', '24x7' or an "
                "exchange_calendars code such as 'XNYS', 'XNAS', 'XLON'"
            )

    @property
    def pip_size(self) -> float:
        return 10.0 ** (-self.pip_position)


@dataclass(frozen=True)
class Universe:
    """A named set of instruments and the date range the pipeline covers for them."""

    name: str
    instruments: tuple[InstrumentMeta, ...]
    start_date: date
    end_date: date | None = None

    def __post_init__(self) -> None:
        if not self.instruments:
            raise UniverseError(f"universe {self.name!r} has no instruments")
        if self.end_date is not None and self.end_date < self.start_date:
            raise UniverseError(
                f"universe {self.name!r}: end_date {self.end_date} is before start_date {self.start_date}"
            )
        seen: set[str] = set()
        for instrument in self.instruments:
            if instrument.symbol in seen:
                raise UniverseError(f"universe {self.name!r}: duplicate symbol {instrument.symbol!r}")
            seen.add(instrument.symbol)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(instrument.symbol for instrument in self.instruments)

    def instrument(self, symbol: str) -> InstrumentMeta:
        for candidate in self.instruments:
            if candidate.symbol == symbol:
                return candidate
        raise KeyError(f"symbol {symbol!r} is not in universe {self.name!r} ({', '.join(self.symbols)})")


_REQUIRED_FIELDS = tuple(f.name for f in fields(InstrumentMeta) if f.name != "name")
_KNOWN_FIELDS = frozenset(f.name for f in fields(InstrumentMeta))
_FLOAT_FIELDS = ("tick_size", "lot_size", "min_volume", "step_volume")


def _as_date(value: object, what: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise UniverseError(f"{what}: expected a date like 2020-01-31, got {value!r}")


def _as_float(value: object, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UniverseError(f"field {field_name!r}: expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise UniverseError(f"field {field_name!r}: expected a number, got {value!r}") from None


def _as_int(value: object, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UniverseError(f"field {field_name!r}: expected an integer, got {value!r}")
    return value


def _parse_instrument(entry: object) -> InstrumentMeta:
    if not isinstance(entry, Mapping):
        raise UniverseError(f"expected a mapping of fields, got {type(entry).__name__} {entry!r}")
    unknown = sorted(str(key) for key in entry if key not in _KNOWN_FIELDS)
    if unknown:
        raise UniverseError(f"unknown field(s) {unknown}; allowed: {sorted(_KNOWN_FIELDS)}")
    missing = [name for name in _REQUIRED_FIELDS if entry.get(name) is None]
    if missing:
        raise UniverseError(f"missing field(s) {missing}")
    try:
        asset_class = AssetClass(entry["asset_class"])
    except ValueError:
        allowed = ", ".join(member.value for member in AssetClass)
        raise UniverseError(
            f"field 'asset_class': unknown asset class {entry['asset_class']!r}; use one of {allowed}"
        ) from None
    symbol = entry["symbol"]
    if not isinstance(symbol, str):
        raise UniverseError(f"field 'symbol': expected a string, got {symbol!r}")
    name = entry.get("name", symbol)
    if not isinstance(name, str):
        raise UniverseError(f"field 'name': expected a string, got {name!r}")
    for text_field in ("quote_currency", "calendar"):
        if not isinstance(entry[text_field], str):
            raise UniverseError(f"field {text_field!r}: expected a string, got {entry[text_field]!r}")
    numbers = {field_name: _as_float(entry[field_name], field_name) for field_name in _FLOAT_FIELDS}
    return InstrumentMeta(
        symbol=symbol,
        name=name,
        asset_class=asset_class,
        quote_currency=entry["quote_currency"],
        pip_position=_as_int(entry["pip_position"], "pip_position"),
        calendar=entry["calendar"],
        **numbers,
    )


def parse_universe(document: object, origin: str = "<universe>") -> Universe:
    """Build a Universe from an already-parsed YAML document; `origin` names it in error messages."""
    if not isinstance(document, Mapping):
        raise UniverseError(
            f"{origin}: expected a mapping with name, start_date and instruments, "
            f"got {type(document).__name__}"
        )
    unknown = sorted(
        str(key) for key in document if key not in {"name", "start_date", "end_date", "instruments"}
    )
    if unknown:
        raise UniverseError(f"{origin}: unknown top-level field(s) {unknown}")
    name = document.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UniverseError(f"{origin}: field 'name' must be a non-empty string, got {name!r}")
    if document.get("start_date") is None:
        raise UniverseError(f"{origin}: missing field 'start_date'")
    start_date = _as_date(document["start_date"], f"{origin}: field 'start_date'")
    end_raw = document.get("end_date")
    end_date = None if end_raw is None else _as_date(end_raw, f"{origin}: field 'end_date'")
    entries = document.get("instruments")
    if not isinstance(entries, list) or not entries:
        raise UniverseError(f"{origin}: field 'instruments' must be a non-empty list of mappings")
    instruments: list[InstrumentMeta] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        symbol = entry.get("symbol") if isinstance(entry, Mapping) else None
        where = f"{origin}: instruments[{index}] (symbol {symbol!r})"
        try:
            instrument = _parse_instrument(entry)
        except UniverseError as error:
            raise UniverseError(f"{where}: {error}") from None
        if instrument.symbol in seen:
            raise UniverseError(
                f"{where}: field 'symbol': duplicate symbol, "
                f"already defined by instruments[{seen[instrument.symbol]}]"
            )
        seen[instrument.symbol] = index
        instruments.append(instrument)
    try:
        return Universe(name=name, instruments=tuple(instruments), start_date=start_date, end_date=end_date)
    except UniverseError as error:
        raise UniverseError(f"{origin}: {error}") from None


def load_universe(path: str | Path) -> Universe:
    """Read and validate a universe YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UniverseError(f"cannot read universe file {path}: {error}") from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UniverseError(f"{path}: not valid YAML: {error}") from error
    return parse_universe(document, origin=str(path))


def _as_timestamp(day: date | str | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(day)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_localize(None)
    return stamp.normalize()


@lru_cache(maxsize=32)
def _exchange_sessions(calendar: str, first_year: int, last_year: int) -> pd.DatetimeIndex:
    """Sessions of an exchange over whole years; cached because building a calendar takes ~0.1 s."""
    exchange = exchange_calendars.get_calendar(
        calendar, start=f"{first_year}-01-01", end=f"{last_year}-12-31"
    )
    return pd.DatetimeIndex(exchange.sessions).tz_localize(None)


def _sessions_covering(calendar: str, first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    """Sessions over whole years around [first, last].

    Decade-aligned years first, so callers walking partitions day by day share one cached calendar; then
    exactly the years asked for, since some calendars start late or record holidays only a year ahead.
    """
    last_year = max(last.year, pd.Timestamp.now().year)
    spans = dict.fromkeys([(first.year - first.year % 10, last_year), (first.year, last.year)])
    failure: Exception | None = None
    for first_year, through_year in spans:
        try:
            return _exchange_sessions(calendar, first_year, through_year)
        except Exception as error:  # exchange_calendars raises several unrelated types for bad ranges
            failure = error
    raise UniverseError(
        f"calendar {calendar!r} cannot cover {first.date()}..{last.date()}: {failure}; "
        "use '24x5' or another exchange code for this range"
    ) from failure


def trading_days(
    calendar: str, start: date | str | pd.Timestamp, end: date | str | pd.Timestamp
) -> pd.DatetimeIndex:
    """Days in [start, end] (inclusive) on which a daily bar is expected, as UTC-midnight timestamps.

    '24x5' is Monday to Friday (FX, futures on Globex), '24x7' every day (crypto), anything else an
    exchange_calendars code ('XNYS', 'XNAS', ...) whose sessions are used, holidays excluded.
    """
    first, last = _as_timestamp(start), _as_timestamp(end)
    if last < first:
        return pd.DatetimeIndex([], dtype="datetime64[ns, UTC]")
    if calendar == CALENDAR_24X7:
        days = pd.date_range(first, last, freq="D")
    elif calendar == CALENDAR_24X5:
        days = pd.bdate_range(first, last)
    elif calendar in _exchange_calendar_names():
        sessions = _sessions_covering(calendar, first, last)
        days = sessions[(sessions >= first) & (sessions <= last)]
    else:
        raise UniverseError(
            f"unknown calendar {calendar!r}; use '24x5', '24x7' or an exchange_calendars code"
        )
    return pd.DatetimeIndex(days).tz_localize("UTC").astype("datetime64[ns, UTC]").rename(None)
