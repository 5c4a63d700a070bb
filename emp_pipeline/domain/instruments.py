"""What the pipeline trades: instrument terms, and universes loaded from YAML.

The terms are what sizing, rounding, order submission and costs need (tick size, pip position, lot size,
minimum and step volume, overnight swaps) and what calendar checks need (the instrument's trading calendar,
see `domain/calendars.py`). They come from a universe file or from the venue, never from the bars: a price
series cannot tell a lot size, and guessing one silently mis-sizes every order. Universe files are validated
strictly at load time, so a typo fails at startup with the entry and field named, not as a bad order or a
silent gap weeks later.

Volumes are in units of the instrument (base currency for FX, ounces for metals, shares for equities and
ETFs, contracts for indices and energy, coins for crypto); `lot_size` is how many units make one lot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from emp_pipeline.domain.calendars import CALENDAR_24X5, is_known_calendar
from emp_pipeline.domain.timeframes import Timeframe, TimeframeError
from emp_pipeline.domain.yaml_documents import YamlDocumentError, load_yaml


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


class SwapType(StrEnum):
    """How `swap_long` / `swap_short` are expressed (cTrader's `swapCalculationType`)."""

    PIPS = "pips"  # pips per lot per night
    PERCENT = "percent"  # annual interest in percent of the position's notional, charged per night


class Weekday(IntEnum):
    """A day of the week, numbered as `datetime.weekday()` and pandas' `dayofweek` number them."""

    MONDAY = 0
    TUESDAY = 1
    WEDNESDAY = 2
    THURSDAY = 3
    FRIDAY = 4
    SATURDAY = 5
    SUNDAY = 6


@dataclass(frozen=True)
class InstrumentMeta:
    """One tradable instrument; construction validates values so no invalid instance exists.

    Overnight financing: a position held across a rollover of its calendar (17:00 New York for '24x5', see
    `calendars.rollover_times`) is credited `swap_long` / `swap_short` per lot (negative = charged), in the
    unit `swap_type` names, and three times that on the rollover of `swap_triple_weekday` (Wednesday for
    spot FX: its value date jumps the weekend). Zero swaps (the default) mean no financing is booked: right
    for cash equities and ETFs, a real omission for FX and CFDs, whose swaps the broker publishes
    (cTrader's symbol details carry them).

    Spread: bars are bid prices, so a buy pays the ask, ``bid + spread``. `spread_pips` is the instrument's
    typical spread in pips, what the research charges on every buy when the bars carry no per-bar spread
    (see `financing.spread_grid`); zero (the default) charges none, right for data that is already mid or
    traded prices.
    """

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
    swap_long: float = 0.0
    swap_short: float = 0.0
    swap_type: SwapType = SwapType.PIPS
    swap_triple_weekday: Weekday = Weekday.WEDNESDAY
    spread_pips: float = 0.0

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
        for field_name in ("swap_long", "swap_short"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise UniverseError(f"field {field_name!r}: must be a finite number, got {value!r}")
        spread = self.spread_pips
        if isinstance(spread, bool) or not isinstance(spread, int | float) or not 0 <= spread < math.inf:
            raise UniverseError(f"field 'spread_pips': must be a finite number of pips >= 0, got {spread!r}")
        if not isinstance(self.swap_type, SwapType):
            raise UniverseError(f"field 'swap_type': must be a SwapType, got {self.swap_type!r}")
        if not isinstance(self.swap_triple_weekday, Weekday):
            raise UniverseError(
                f"field 'swap_triple_weekday': must be a Weekday, got {self.swap_triple_weekday!r}"
            )
        if self.calendar == CALENDAR_24X5 and self.swap_triple_weekday >= Weekday.SATURDAY:
            raise UniverseError(
                f"field 'swap_triple_weekday': {self.swap_triple_weekday.name.lower()} has no rollover on "
                "the '24x5' calendar (Monday..Friday); FX brokers triple Wednesday's"
            )

    @property
    def pip_size(self) -> float:
        return 10.0 ** (-self.pip_position)


@dataclass(frozen=True)
class Universe:
    """A named set of instruments, the date range the pipeline covers for them and the bars it works on.

    `timeframe` is the bar size of every data set read for this universe (a source delivering another size
    is refused). `timezone` is how naive timestamps in its data files are read (UTC unless a file was
    exported in local time); timestamps with an offset or a zone are exact whatever it says.
    """

    name: str
    instruments: tuple[InstrumentMeta, ...]
    start_date: date
    end_date: date | None = None
    timeframe: Timeframe = Timeframe.D1
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not self.instruments:
            raise UniverseError(f"universe {self.name!r} has no instruments")
        if not isinstance(self.timeframe, Timeframe):
            raise UniverseError(
                f"universe {self.name!r}: timeframe must be a Timeframe, got {self.timeframe!r}"
            )
        if not is_known_timezone(self.timezone):
            raise UniverseError(
                f"universe {self.name!r}: field 'timezone': unknown timezone {self.timezone!r}; use an IANA "
                "name such as 'UTC', 'America/New_York' or 'Europe/London'"
            )
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

    @property
    def calendars(self) -> dict[str, str]:
        """symbol -> trading calendar, what sources need to tell closed time from a gap."""
        return {instrument.symbol: instrument.calendar for instrument in self.instruments}

    def instrument(self, symbol: str) -> InstrumentMeta:
        for candidate in self.instruments:
            if candidate.symbol == symbol:
                return candidate
        raise KeyError(f"symbol {symbol!r} is not in universe {self.name!r} ({', '.join(self.symbols)})")


def is_known_timezone(name: object) -> bool:
    if not isinstance(name, str) or not name.strip():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


_OPTIONAL_FIELDS = frozenset(
    {"name", "swap_long", "swap_short", "swap_type", "swap_triple_weekday", "spread_pips"}
)
_REQUIRED_FIELDS = tuple(f.name for f in fields(InstrumentMeta) if f.name not in _OPTIONAL_FIELDS)
_KNOWN_FIELDS = frozenset(f.name for f in fields(InstrumentMeta))
_FLOAT_FIELDS = ("tick_size", "lot_size", "min_volume", "step_volume")
_SWAP_FIELDS = ("swap_long", "swap_short", "spread_pips")
_UNIVERSE_FIELDS = frozenset({"name", "start_date", "end_date", "timeframe", "timezone", "instruments"})


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


def _as_choice(value: object, field_name: str, choices: Mapping[str, object]) -> object:
    key = value.strip().lower() if isinstance(value, str) else None
    if key not in choices:
        raise UniverseError(f"field {field_name!r}: {value!r} is not one of {', '.join(choices)}")
    return choices[key]


_SWAP_TYPES = {member.value: member for member in SwapType}
_WEEKDAYS = {member.name.lower(): member for member in Weekday}


def _swap_terms(entry: Mapping) -> dict[str, object]:
    """The optional financing and spread fields present in an entry, converted (absent ones keep defaults)."""
    terms: dict[str, object] = {
        field_name: _as_float(entry[field_name], field_name)
        for field_name in _SWAP_FIELDS
        if entry.get(field_name) is not None
    }
    if entry.get("swap_type") is not None:
        terms["swap_type"] = _as_choice(entry["swap_type"], "swap_type", _SWAP_TYPES)
    if entry.get("swap_triple_weekday") is not None:
        terms["swap_triple_weekday"] = _as_choice(
            entry["swap_triple_weekday"], "swap_triple_weekday", _WEEKDAYS
        )
    return terms


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
        **_swap_terms(entry),
    )


def parse_universe(document: object, origin: str = "<universe>") -> Universe:
    """Build a Universe from an already-parsed YAML document; `origin` names it in error messages."""
    if not isinstance(document, Mapping):
        raise UniverseError(
            f"{origin}: expected a mapping with name, start_date and instruments, "
            f"got {type(document).__name__}"
        )
    unknown = sorted(str(key) for key in document if key not in _UNIVERSE_FIELDS)
    if unknown:
        raise UniverseError(
            f"{origin}: unknown top-level field(s) {unknown}; allowed: {sorted(_UNIVERSE_FIELDS)}"
        )
    name = document.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UniverseError(f"{origin}: field 'name' must be a non-empty string, got {name!r}")
    if document.get("start_date") is None:
        raise UniverseError(f"{origin}: missing field 'start_date'")
    start_date = _as_date(document["start_date"], f"{origin}: field 'start_date'")
    end_raw = document.get("end_date")
    end_date = None if end_raw is None else _as_date(end_raw, f"{origin}: field 'end_date'")
    try:
        timeframe = Timeframe.parse(document.get("timeframe") or Timeframe.D1)
    except TimeframeError as error:
        raise UniverseError(f"{origin}: field 'timeframe': {error}") from None
    timezone = document.get("timezone") or "UTC"
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
        return Universe(
            name=name,
            instruments=tuple(instruments),
            start_date=start_date,
            end_date=end_date,
            timeframe=timeframe,
            timezone=timezone,
        )
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
        document = load_yaml(text, origin=str(path))
    except YamlDocumentError as error:
        raise UniverseError(str(error)) from None
    return parse_universe(document, origin=str(path))


_TERM_HINTS: tuple[tuple[str, str], ...] = (
    ("asset_class", ", ".join(member.value for member in AssetClass)),
    ("quote_currency", "3 letters, e.g. USD (JPY for USDJPY)"),
    ("tick_size", "smallest price step, e.g. 0.00001 for EURUSD, 0.01 for a US share"),
    ("pip_position", "e.g. 4 for EURUSD, 2 for USDJPY and for shares"),
    ("lot_size", "units in one lot, e.g. 100000 for FX, 1 for shares"),
    ("min_volume", "smallest order, in units"),
    ("step_volume", "order size increment, in units"),
    ("calendar", "24x5 (FX), 24x7 (crypto) or an exchange code such as XNYS"),
)


class InstrumentTermsMissingError(UniverseError):
    """Bars exist for symbols that no universe file (or venue) gives terms for; the run cannot size orders.

    The message lists the symbols and a universe file to complete (`universe_template`), because terms are
    never guessed from prices.
    """

    def __init__(self, message: str, symbols: Sequence[str]) -> None:
        super().__init__(message)
        self.symbols = tuple(symbols)


def universe_template(
    name: str, symbols: Sequence[str], timeframe: Timeframe, start_date: date, end_date: date | None
) -> str:
    """A universe file for `symbols` with every term left null for a person to fill in.

    What the data can say honestly (date range, timeframe) is filled; each term carries a hint. Loading the
    file unchanged fails naming the first missing term, so nothing runs on a half-filled file.
    """
    width = max(len(field_name) for field_name, _ in _TERM_HINTS) + len(": null")
    lines = [
        f"name: {name}",
        f"timeframe: {timeframe}",
        f"start_date: {start_date.isoformat()}",
        *([f"end_date: {end_date.isoformat()}"] if end_date else []),
        "instruments:",
    ]
    for symbol in symbols:
        lines.append(f"  - symbol: {yaml.safe_dump(symbol, default_style=None).splitlines()[0]}")
        lines.extend(f"    {f'{field_name}: null':<{width}}  # {hint}" for field_name, hint in _TERM_HINTS)
    return "\n".join(lines) + "\n"
