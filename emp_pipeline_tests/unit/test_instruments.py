"""Instrument metadata, universe files and trading calendars."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from emp_pipeline.domain.instruments import (
    AssetClass,
    InstrumentMeta,
    SwapType,
    Universe,
    UniverseError,
    Weekday,
    load_universe,
    parse_universe,
    universe_template,
)
from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline.settings import DEFAULT_UNIVERSE_FILE, SAMPLE_UNIVERSE_FILE

EURUSD = {
    "symbol": "EURUSD=X",
    "name": "Euro / US dollar",
    "asset_class": "fx",
    "quote_currency": "USD",
    "tick_size": 0.00001,
    "pip_position": 4,
    "lot_size": 100000,
    "min_volume": 1000,
    "step_volume": 1000,
    "calendar": "24x5",
}
SPY = {**EURUSD, "symbol": "SPY", "name": "SPDR S&P 500", "asset_class": "etf", "tick_size": 0.01,
       "pip_position": 2, "lot_size": 1, "min_volume": 1, "step_volume": 1, "calendar": "XNYS"}  # fmt: skip


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "universe.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _document(*instruments: dict) -> dict:
    return {"name": "test", "start_date": "2020-01-02", "instruments": list(instruments)}


def test_default_universe_spans_asset_classes_with_realistic_metadata() -> None:
    universe = load_universe(DEFAULT_UNIVERSE_FILE)
    assert 6 <= len(universe.instruments) <= 10
    classes = {instrument.asset_class for instrument in universe.instruments}
    assert {AssetClass.FX, AssetClass.ETF, AssetClass.METAL, AssetClass.CRYPTO} <= classes
    eurusd, usdjpy = universe.instrument("EURUSD=X"), universe.instrument("USDJPY=X")
    assert (eurusd.pip_position, eurusd.lot_size, eurusd.calendar) == (4, 100_000, "24x5")
    assert (usdjpy.pip_position, usdjpy.quote_currency) == (2, "JPY")
    assert universe.instrument("GC=F").lot_size == 100
    assert universe.instrument("BTC-USD").calendar == "24x7"
    assert universe.instrument("SPY").calendar == "XNYS"
    assert universe.end_date is None


def test_sample_universe_declares_its_own_old_date_range() -> None:
    universe = load_universe(SAMPLE_UNIVERSE_FILE)
    assert set(universe.symbols) == {"^GSPC", "^IXIC", "GOOG"}
    assert universe.start_date == date(2004, 8, 19)
    assert universe.end_date == date(2013, 3, 1)


def test_loads_a_valid_file_with_date_objects_or_strings(tmp_path: Path) -> None:
    text = "name: mine\nstart_date: 2021-03-01\nend_date: '2021-06-30'\ninstruments:\n" + "\n".join(
        f"  - {yaml.safe_dump(item, default_flow_style=True).strip()}" for item in (EURUSD, SPY)
    )
    path = tmp_path / "mine.yaml"
    path.write_text(text, encoding="utf-8")
    universe = load_universe(path)
    assert universe == Universe(
        name="mine",
        instruments=(
            InstrumentMeta(
                "EURUSD=X", "Euro / US dollar", AssetClass.FX, "USD", 1e-5, 4, 1e5, 1e3, 1e3, "24x5"
            ),
            InstrumentMeta("SPY", "SPDR S&P 500", AssetClass.ETF, "USD", 0.01, 2, 1, 1, 1, "XNYS"),
        ),
        start_date=date(2021, 3, 1),
        end_date=date(2021, 6, 30),
    )
    assert universe.instrument("SPY").pip_size == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"asset_class": "bond"}, r"instruments\[1\] \(symbol 'SPY'\).*asset_class.*'bond'"),
        ({"tick_size": 0}, r"instruments\[1\] \(symbol 'SPY'\).*'tick_size'.*positive"),
        ({"tick_size": -0.01}, r"instruments\[1\].*'tick_size'"),
        ({"tick_size": "abc"}, r"instruments\[1\].*'tick_size'.*expected a number"),
        ({"lot_size": 0}, r"instruments\[1\].*'lot_size'"),
        ({"min_volume": -1}, r"instruments\[1\].*'min_volume'"),
        ({"step_volume": 0}, r"instruments\[1\].*'step_volume'"),
        ({"pip_position": 2.5}, r"instruments\[1\].*'pip_position'.*integer"),
        ({"pip_position": 4}, r"instruments\[1\].*'pip_position'.*smaller than the tick"),
        ({"calendar": "NYSE-ish"}, r"instruments\[1\] \(symbol 'SPY'\).*'calendar'.*'NYSE-ish'"),
        ({"quote_currency": "usd"}, r"instruments\[1\].*'quote_currency'"),
        ({"colour": "red"}, r"instruments\[1\].*unknown field.*colour"),
        ({"symbol": "EURUSD=X"}, r"instruments\[1\] \(symbol 'EURUSD=X'\).*duplicate.*instruments\[0\]"),
        ({"swap_long": "cheap"}, r"instruments\[1\].*'swap_long'.*expected a number"),
        ({"swap_short": float("nan")}, r"instruments\[1\].*'swap_short'.*finite"),
        ({"swap_type": "points"}, r"instruments\[1\].*'swap_type': 'points' is not one of pips, percent"),
        ({"swap_triple_weekday": "funday"}, r"instruments\[1\].*'swap_triple_weekday'.*monday, tuesday"),
        ({"swap_triple_weekday": 3}, r"instruments\[1\].*'swap_triple_weekday': 3 is not one of"),
    ],
)
def test_broken_instrument_names_entry_and_field(tmp_path: Path, change: dict, expected: str) -> None:
    path = _write(tmp_path, _document(EURUSD, {**SPY, **change}))
    with pytest.raises(UniverseError, match=expected):
        load_universe(path)


@pytest.mark.parametrize("field", ["asset_class", "tick_size", "calendar", "lot_size", "symbol"])
def test_missing_field_is_named(tmp_path: Path, field: str) -> None:
    broken = {key: value for key, value in SPY.items() if key != field}
    with pytest.raises(UniverseError, match=rf"instruments\[1\].*missing field.*{field}"):
        load_universe(_write(tmp_path, _document(EURUSD, broken)))


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (["not", "a", "mapping"], r"expected a mapping"),
        ({"name": "x", "instruments": [EURUSD]}, r"missing field 'start_date'"),
        ({**_document(EURUSD), "start_date": "yesterday"}, r"'start_date'.*'yesterday'"),
        ({**_document(EURUSD), "end_date": "2019-01-01"}, r"end_date 2019-01-01 is before start_date"),
        ({**_document(EURUSD), "instruments": []}, r"'instruments' must be a non-empty list"),
        ({**_document(EURUSD), "instruments": ["EURUSD=X"]}, r"instruments\[0\].*expected a mapping"),
        ({**_document(EURUSD), "universe": 1}, r"unknown top-level field.*universe"),
        ({**_document(EURUSD), "name": ""}, r"'name' must be a non-empty string"),
        (
            {**_document(EURUSD), "timeframe": "H2"},
            r"field 'timeframe': unknown timeframe 'H2'; use one of M1",
        ),
        ({**_document(EURUSD), "timezone": "Mars/Olympus"}, r"'timezone': unknown timezone 'Mars/Olympus'"),
    ],
)
def test_broken_file_structure(tmp_path: Path, document: object, expected: str) -> None:
    with pytest.raises(UniverseError, match=expected):
        load_universe(_write(tmp_path, document))


def test_unreadable_and_invalid_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(UniverseError, match="cannot read universe file"):
        load_universe(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(UniverseError, match="not valid YAML"):
        load_universe(bad)


def test_instrument_and_universe_validate_on_direct_construction() -> None:
    with pytest.raises(UniverseError, match="'calendar'"):
        InstrumentMeta("X", "X", AssetClass.EQUITY, "USD", 0.01, 2, 1, 1, 1, "MOON")
    meta = InstrumentMeta("X", "X", AssetClass.EQUITY, "USD", 0.01, 2, 1, 1, 1, "XNYS")
    with pytest.raises(UniverseError, match="duplicate symbol 'X'"):
        Universe("u", (meta, meta), date(2020, 1, 1))
    with pytest.raises(KeyError, match="'Y' is not in universe 'u'"):
        Universe("u", (meta,), date(2020, 1, 1)).instrument("Y")
    with pytest.raises(UniverseError, match="expected a mapping"):
        parse_universe("text")


def test_swap_terms_timeframe_and_timezone_are_read_from_the_file(tmp_path: Path) -> None:
    swaps = {"swap_long": -6.5, "swap_short": 1.2, "swap_type": "Pips", "swap_triple_weekday": "Wednesday"}
    document = {**_document({**EURUSD, **swaps}, SPY), "timeframe": "h1", "timezone": "America/New_York"}
    universe = load_universe(_write(tmp_path, document))
    eurusd, spy = universe.instrument("EURUSD=X"), universe.instrument("SPY")
    assert (eurusd.swap_long, eurusd.swap_short) == (-6.5, 1.2)
    assert (eurusd.swap_type, eurusd.swap_triple_weekday) == (SwapType.PIPS, Weekday.WEDNESDAY)
    assert (spy.swap_long, spy.swap_short, spy.swap_type) == (0.0, 0.0, SwapType.PIPS)  # no financing
    assert (universe.timeframe, universe.timezone) == (Timeframe.H1, "America/New_York")
    plain = load_universe(_write(tmp_path, _document(EURUSD)))
    assert (plain.timeframe, plain.timezone) == (Timeframe.D1, "UTC")


def test_fx_triple_swap_must_fall_on_a_rollover_weekday() -> None:
    with pytest.raises(UniverseError, match="saturday has no rollover on the '24x5' calendar"):
        InstrumentMeta("EURUSD", "e", AssetClass.FX, "USD", 1e-5, 4, 1e5, 1e3, 1e3, "24x5",
                       swap_triple_weekday=Weekday.SATURDAY)  # fmt: skip
    crypto = InstrumentMeta("BTCUSD", "b", AssetClass.CRYPTO, "USD", 0.01, 2, 1, 0.01, 0.01, "24x7",
                            swap_triple_weekday=Weekday.FRIDAY)  # fmt: skip
    assert crypto.swap_triple_weekday == Weekday.FRIDAY


def test_universe_template_fills_what_data_can_say_and_leaves_every_term_to_a_person(tmp_path: Path) -> None:
    text = universe_template(
        "csv:ticks", ["EURUSD", "^GSPC"], Timeframe.H1, date(2017, 1, 2), date(2017, 12, 29)
    )
    document = yaml.safe_load(text)
    assert (document["timeframe"], document["start_date"], document["end_date"]) == (
        "H1",
        date(2017, 1, 2),
        date(2017, 12, 29),
    )
    assert [entry["symbol"] for entry in document["instruments"]] == ["EURUSD", "^GSPC"]
    assert all(
        value is None for entry in document["instruments"] for key, value in entry.items() if key != "symbol"
    )
    assert "# 24x5 (FX), 24x7 (crypto) or an exchange code" in text
    path = tmp_path / "template.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(
        UniverseError, match=r"instruments\[0\] \(symbol 'EURUSD'\): missing field\(s\) \['asset_class'"
    ):
        load_universe(path)
