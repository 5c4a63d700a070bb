"""Instruments (terms change only explicitly, and every change is recorded), market regimes and control
flags (bulk upserts that replace rows and never duplicate them)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from emp_pipeline.domain.instrument_changes import InstrumentTermsChangedError
from emp_pipeline.domain.instruments import AssetClass, SwapType, Weekday, load_universe
from emp_pipeline.registry.control import KILL_SWITCH, flag_enabled, get_flag, set_flag
from emp_pipeline.registry.engine import session_scope
from emp_pipeline.registry.errors import InvalidRegistryInputError
from emp_pipeline.registry.instruments import (
    TermAcceptance,
    load_instruments,
    store_instruments,
)
from emp_pipeline.registry.models import InstrumentTermChange, MarketRegime
from emp_pipeline.registry.regimes import upsert_market_regimes
from emp_pipeline.settings import SAMPLE_UNIVERSE_FILE, UNIVERSES_DIR

LABELS = ("bull_trend", "bear_trend", "range", "high_volatility")


def term_changes(session: Session, symbol: str | None = None) -> list[InstrumentTermChange]:
    """The recorded term changes (of one symbol, if given), oldest first."""
    query = select(InstrumentTermChange).order_by(InstrumentTermChange.changed_at, InstrumentTermChange.id)
    if symbol is not None:
        query = query.where(InstrumentTermChange.symbol == symbol)
    return list(session.scalars(query))


def stored_regimes(
    session: Session,
    classifier: str,
    symbols: list[str] | None = None,
    days: tuple[dt.date, dt.date] | None = None,
) -> pd.DataFrame:
    """The stored rows as a regime frame: date (UTC midnight), symbol, regime, prob_<label>..., warmup."""
    query = select(MarketRegime).where(MarketRegime.classifier == classifier)
    if symbols is not None:
        query = query.where(MarketRegime.symbol.in_(symbols))
    if days is not None:
        query = query.where(MarketRegime.date.between(*days))
    rows = session.scalars(query.order_by(MarketRegime.symbol, MarketRegime.date)).all()
    frame = pd.DataFrame(
        [
            {
                "date": pd.Timestamp(row.date, tz="UTC"),
                "symbol": row.symbol,
                "regime": row.regime,
                **{f"prob_{label}": p for label, p in row.probabilities.items()},
                "warmup": row.warmup,
            }
            for row in rows
        ],
        columns=None if rows else ["date", "symbol", "regime", "warmup"],
    )
    if not rows:
        return frame
    # A NaN probability is stored as JSON null.
    probabilities = {column: np.float64 for column in frame.columns if column.startswith("prob_")}
    return frame.astype({"date": "datetime64[ns, UTC]", **probabilities})


def regime_frame(symbols: list[str], days: int, seed: int = 0) -> pd.DataFrame:
    """A frame shaped like domain.regimes output: one row per symbol and day, probabilities summing to 1."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2020-01-01", periods=days, freq="D", tz="UTC").as_unit("ns")
    frame = pd.DataFrame(
        {
            "date": np.tile(dates, len(symbols)),
            "symbol": np.repeat(symbols, days),
        }
    )
    probabilities = rng.dirichlet(np.ones(len(LABELS)), size=len(frame))
    for k, label in enumerate(LABELS):
        frame[f"prob_{label}"] = probabilities[:, k]
    frame["regime"] = np.array(LABELS)[probabilities.argmax(axis=1)]
    frame["warmup"] = np.tile(np.arange(days) < 3, len(symbols))
    return frame


def rows(engine: Engine, model: type) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_instruments_round_trip_and_a_changed_term_is_refused_with_nothing_written(
    registry_engine: Engine,
) -> None:
    universe = load_universe(SAMPLE_UNIVERSE_FILE)
    first, *others = universe.instruments
    with session_scope(registry_engine) as session:
        sync = store_instruments(session, [first], origin="sample.yaml")
    assert sync.added == (first.symbol,) and sync.changes == ()
    weekend = dataclasses.replace(first, asset_class=AssetClass.CRYPTO, calendar="24x7")

    with pytest.raises(InstrumentTermsChangedError) as refused, session_scope(registry_engine) as session:
        store_instruments(session, [weekend, *others], origin="a data file")

    assert [change.describe() for change in refused.value.changes] == [
        f"{first.symbol} asset_class: index -> crypto",
        f"{first.symbol} calendar: XNYS -> 24x7",
    ]
    assert "a data file changes 2 stored instrument terms" in str(refused.value)
    with session_scope(registry_engine) as session:
        assert load_instruments(session) == [first]  # the new symbols of the refused call were not added
        assert term_changes(session) == []
        sync = store_instruments(session, universe.instruments, origin="sample.yaml")
        assert sync.added == tuple(meta.symbol for meta in others) and sync.changes == ()
        assert {meta.symbol: meta for meta in load_instruments(session)} == {
            meta.symbol: meta for meta in universe.instruments
        }


def test_an_accepted_term_change_is_recorded_with_old_and_new_value_origin_reason_and_time(
    registry_engine: Engine,
) -> None:
    universe = load_universe(SAMPLE_UNIVERSE_FILE)
    with session_scope(registry_engine) as session:
        store_instruments(session, universe.instruments, origin="sample.yaml")
    resized = dataclasses.replace(universe.instruments[0], lot_size=10.0, min_volume=0.5)
    before = dt.datetime.now(dt.UTC)

    with session_scope(registry_engine) as session:
        sync = store_instruments(
            session,
            [resized],
            origin="universe file sample.yaml (sha256 0123)",
            acceptance=TermAcceptance(reason="broker moved to 10-unit lots", accepted_by="dagster run r-1"),
        )

    assert [change.describe() for change in sync.changes] == [
        f"{resized.symbol} lot_size: 1.0 -> 10.0",
        f"{resized.symbol} min_volume: 0.1 -> 0.5",
    ]
    with session_scope(registry_engine) as session:
        assert resized in load_instruments(session)
        history = term_changes(session, resized.symbol)
    assert [(r.term, r.old_value, r.new_value) for r in history] == [
        ("lot_size", "1.0", "10.0"),
        ("min_volume", "0.1", "0.5"),
    ]
    assert {(r.origin, r.reason, r.accepted_by) for r in history} == {
        ("universe file sample.yaml (sha256 0123)", "broker moved to 10-unit lots", "dagster run r-1")
    }
    assert all(before <= r.changed_at <= dt.datetime.now(dt.UTC) for r in history)


def test_market_regimes_round_trip_and_upsert_replaces(registry_engine: Engine) -> None:
    frame = regime_frame(["EURUSD", "SPY", "^GSPC"], days=40)
    with session_scope(registry_engine) as session:
        assert upsert_market_regimes(session, frame, classifier="hmm") == 120
        upsert_market_regimes(session, frame.head(10), classifier="threshold")

    changed = frame[frame["symbol"] == "SPY"].copy()
    changed["regime"] = "range"
    changed["prob_range"] = 1.0
    changed[["prob_bull_trend", "prob_bear_trend", "prob_high_volatility"]] = 0.0
    with session_scope(registry_engine) as session:
        upsert_market_regimes(session, changed, classifier="hmm")

    assert rows(registry_engine, MarketRegime) == 130
    expected = pd.concat([frame[frame["symbol"] != "SPY"], changed]).sort_values(["symbol", "date"])
    expected = expected[["date", "symbol", "regime", *(f"prob_{label}" for label in LABELS), "warmup"]]
    with session_scope(registry_engine) as session:
        stored = stored_regimes(session, "hmm")
        days = (dt.date(2020, 1, 5), dt.date(2020, 1, 6))
        window = stored_regimes(session, "hmm", symbols=["SPY"], days=days)
        assert stored_regimes(session, "nothing").empty
    pd.testing.assert_frame_equal(stored, expected.reset_index(drop=True), check_exact=True)
    assert list(window["date"].dt.day) == [5, 6]
    assert set(window["regime"]) == {"range"}


def test_market_regime_frames_must_be_well_formed(registry_engine: Engine) -> None:
    frame = regime_frame(["SPY"], days=5)
    with session_scope(registry_engine) as session:
        with pytest.raises(InvalidRegistryInputError, match="de-duplicate"):
            upsert_market_regimes(session, pd.concat([frame, frame.tail(1)]), classifier="hmm")
        with pytest.raises(InvalidRegistryInputError, match="prob_<label>"):
            upsert_market_regimes(session, frame[["date", "symbol", "regime"]], classifier="hmm")
        nan_frame = frame.assign(prob_range=np.nan)
        upsert_market_regimes(session, nan_frame, classifier="hmm")
        assert stored_regimes(session, "hmm")["prob_range"].isna().all()


def test_kill_switch_flag(registry_engine: Engine) -> None:
    with session_scope(registry_engine) as session:
        assert not flag_enabled(session, KILL_SWITCH)
        assert get_flag(session, KILL_SWITCH) is None
        set_flag(session, KILL_SWITCH, True, reason="daily loss limit hit", updated_by="risk")
    with session_scope(registry_engine) as session:
        assert flag_enabled(session, KILL_SWITCH)
        set_flag(session, KILL_SWITCH, False, reason="reviewed", updated_by="ops")
    with session_scope(registry_engine) as session:
        flag = get_flag(session, KILL_SWITCH)
        assert flag is not None and not flag_enabled(session, KILL_SWITCH)
    assert (flag.enabled, flag.reason, flag.updated_by) == (False, "reviewed", "ops")
    assert flag.updated_at.tzinfo is dt.UTC


def test_swaps_and_spread_are_stored_terms_read_back_and_changed_only_by_acceptance(
    registry_engine: Engine,
) -> None:
    """The hourly sample's EURUSD keeps its financing and spread through the registry (migration 0008)."""
    (eurusd,) = load_universe(UNIVERSES_DIR / "sample_fx_h1.yaml").instruments
    fx = dataclasses.replace(
        eurusd, swap_type=SwapType.PERCENT, swap_triple_weekday=Weekday.FRIDAY, spread_pips=0.7
    )
    with session_scope(registry_engine) as session:
        store_instruments(session, [fx], origin="sample_fx_h1.yaml")
    with session_scope(registry_engine) as session:
        assert load_instruments(session) == [fx]
    cheaper = dataclasses.replace(fx, swap_long=-0.1, swap_triple_weekday=Weekday.WEDNESDAY)
    with pytest.raises(InstrumentTermsChangedError) as refused, session_scope(registry_engine) as session:
        store_instruments(session, [cheaper], origin="venue terms")
    assert [change.describe() for change in refused.value.changes] == [
        f"EURUSD swap_long: {fx.swap_long} -> -0.1",
        "EURUSD swap_triple_weekday: 4 -> 2",
    ]
    with session_scope(registry_engine) as session:
        assert load_instruments(session) == [fx]
