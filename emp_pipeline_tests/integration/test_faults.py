"""Fault injection: what an operator's bad day does to the lake, the registry and the live decisions.

Each fault is real, not simulated: a writer process is SIGKILLed while it writes, readers race a writer that
replaces files in a loop, a source answers with fewer bars than are stored. After every fault the stored
bytes are what they were before it (or a complete earlier version), and the next writer cleans up.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from sqlalchemy import select

from emp_pipeline.data.sample import SampleSource
from emp_pipeline.data.source import MarketDataError
from emp_pipeline.definitions import build_definitions
from emp_pipeline.defs.live.triggers import newest_regime_bar
from emp_pipeline.defs.market_data.resources import MarketDataResource
from emp_pipeline.defs.perception import assets as perception_assets
from emp_pipeline.domain.anchored_perception import classify_by_year
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.regimes import PROBABILITY_COLUMNS
from emp_pipeline.environment import configured_source, configured_universe
from emp_pipeline.live.engine import StrategyBook, decide_orders, load_market_view
from emp_pipeline.registry.engine import session_scope, shared_engine
from emp_pipeline.registry.instruments import load_instruments
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.registry.models import MarketRegime
from emp_pipeline.settings import Settings
from emp_pipeline.storage.datasets import QUARANTINE_DIR
from emp_pipeline.storage.parquet_frames import DatedFrameStore, HistoryLossError
from emp_pipeline_tests.live_setup import ALWAYS_LONG

DATASET = "bars"
WINDOW = ("2021-01-01", "2022-01-01")
RACE_SECONDS = 3.0
KILL_ROUNDS = 12
BIG_VERSION_ROWS = 400_000  # large enough that a write takes tens of milliseconds: a kill lands inside it


def _version(number: int, rows: int) -> pd.DataFrame:
    """Version ``number`` of the window: ``rows`` rows whose every value is ``number``, so a read can tell
    whether it got one whole version (all values equal, the row count of that version) or a mixture."""
    days = pd.date_range(WINDOW[0], periods=365, freq="D", tz="UTC")
    index = np.arange(rows)
    return pd.DataFrame(
        {
            "date": days[index % len(days)],
            "symbol": [f"S{i // len(days):05d}" for i in index],
            "value": np.full(rows, float(number)),
        }
    )


def _rows_of(number: int) -> int:
    return 365 * (1 + number % 7)


def _replace_in_a_loop(root: str, stop: multiprocessing.synchronize.Event) -> None:
    store = DatedFrameStore(root, DATASET)
    number = 0
    while not stop.is_set():
        number += 1
        store.write_window(_version(number, _rows_of(number)), *WINDOW, replace_history=True)


def _write_big_versions_forever(root: str, first: int) -> None:
    store = DatedFrameStore(root, DATASET)
    number = first
    while True:
        store.write_window(_version(number, BIG_VERSION_ROWS), *WINDOW)
        number += 1


def _assert_one_whole_version(frame: pd.DataFrame) -> float:
    values = frame["value"].unique()
    assert len(values) == 1, f"a read mixed versions {values[:5]}"
    return float(values[0])


@pytest.fixture
def spawn() -> Iterator[multiprocessing.context.SpawnContext]:
    """Processes that start clean (no forked locks or threads of the test process)."""
    yield multiprocessing.get_context("spawn")


def test_readers_racing_an_atomic_replace_never_fail_nor_see_a_torn_file(tmp_path: Path, spawn) -> None:
    store = DatedFrameStore(tmp_path, DATASET)
    store.write_window(_version(0, _rows_of(0)), *WINDOW)
    stop = spawn.Event()
    writer = spawn.Process(target=_replace_in_a_loop, args=(str(tmp_path), stop))
    writer.start()
    reads, failures = [0], []

    def read_until(deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                frame = store.read_window()
                number = _assert_one_whole_version(frame)
                assert len(frame) == _rows_of(int(number))
                reads[0] += 1
            except (OSError, AssertionError, ValueError) as error:
                failures.append(repr(error))

    try:
        time.sleep(0.5)  # the writer is replacing before the readers start
        deadline = time.monotonic() + RACE_SECONDS
        readers = [threading.Thread(target=read_until, args=(deadline,)) for _ in range(2)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
    finally:
        stop.set()
        writer.join(timeout=30)
    assert writer.exitcode == 0
    assert failures == [], f"{len(failures)} of {reads[0] + len(failures)} reads failed: {failures[:3]}"
    assert reads[0] > 100


def test_a_writer_killed_mid_write_leaves_a_whole_version_and_the_next_writer_cleans_up(
    tmp_path: Path, spawn
) -> None:
    store = DatedFrameStore(tmp_path, DATASET)
    store.write_window(_version(0, BIG_VERSION_ROWS), *WINDOW)
    directory = tmp_path / DATASET
    orphans_seen = 0
    for round_number in range(KILL_ROUNDS):
        writer = spawn.Process(
            target=_write_big_versions_forever, args=(str(tmp_path), 1000 * (round_number + 1))
        )
        writer.start()
        deadline = time.monotonic() + 60
        while not list(directory.glob(".*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        assert writer.exitcode == -signal.SIGKILL
        orphans_seen += bool(list(directory.glob(".*.tmp")))

        frame = store.read_window()
        assert len(frame) == BIG_VERSION_ROWS
        _assert_one_whole_version(frame)

    assert orphans_seen > 0, "no kill landed while a temporary file existed"
    store.write_window(_version(1, BIG_VERSION_ROWS), *WINDOW)
    assert not list(directory.glob(".*.tmp"))
    assert _assert_one_whole_version(store.read_window()) == 1.0


def test_a_short_source_leaves_the_stored_bytes_untouched(tmp_path: Path) -> None:
    store = DatedFrameStore(tmp_path, DATASET)
    store.write_window(_version(0, 38), *WINDOW)
    before = (tmp_path / DATASET / "2021.parquet").read_bytes()
    for short in (_version(1, 10), _version(1, 0)):
        with pytest.raises(HistoryLossError):
            store.write_window(short, *WINDOW)
    assert (tmp_path / DATASET / "2021.parquet").read_bytes() == before


# ------------------------------------------------------------------ a failing blocking check, through Dagster

SEEDED = (date(2006, 1, 3), date(2009, 2, 27))
# Month partitions of daily bars.
PUBLISHED = ("2008-11", "2008-12")  # bars, features and regimes materialized before the fault
PUBLISHED_DAYS = (pd.Timestamp("2008-11-01", tz="UTC"), pd.Timestamp("2008-12-31", tz="UTC"))
FEATURES_ONLY = ("2009-01", "2009-02")  # features materialized, regimes not yet
FAULTY = ("2008-12", "2009-02")  # the regimes run that fails: replaces published months and adds new ones
PERCEPTION_ASSETS = ("market_bars", "sensory_features", "market_regimes")


def _materialize(defs, instance: DagsterInstance, window: tuple[str, str], assets: tuple[str, ...]):
    tags = {ASSET_PARTITION_RANGE_START_TAG: window[0], ASSET_PARTITION_RANGE_END_TAG: window[1]}
    job = defs.resolve_job_def("daily_update_job").get_subset(
        asset_selection={defs.resolve_assets_def(name).key for name in assets}
    )
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def _published_bytes(data_dir: Path) -> dict[str, bytes]:
    """Every published file (the quarantine and the writers' lock files are not read by anything)."""
    return {
        str(path.relative_to(data_dir)): path.read_bytes()
        for path in sorted(data_dir.rglob("*.parquet"))
        if QUARANTINE_DIR not in path.parts
    }


def _registry_regimes(database_url: str) -> list[tuple]:
    with session_scope(shared_engine(database_url)) as session:
        rows = session.execute(
            select(MarketRegime).order_by(MarketRegime.symbol, MarketRegime.date)
        ).scalars()
        return [
            (r.symbol, r.date, r.classifier, r.regime, json.dumps(r.probabilities, sort_keys=True))
            for r in rows
        ]


def _live_decisions(data_dir: Path, instruments) -> tuple[pd.Timestamp, list]:
    """What the live job would decide now for an always-long champion holding 10 units of each symbol: the
    bar it trades and the orders that take each holding to the champion's target."""
    market = load_market_view(data_dir)
    book = StrategyBook("champion", ALWAYS_LONG, pd.Timestamp("2008-01-02", tz="UTC"), Costs())
    held = {meta.symbol: 10.0 for meta in instruments}
    orders, _ = decide_orders(book, market, held, {meta.symbol: meta for meta in instruments}, 1e5)
    return market.bar_time, orders


def _registry_rows(database_url: str) -> dict[str, list]:
    with session_scope(shared_engine(database_url)) as session:
        return {"regimes": _registry_regimes(database_url), "instruments": load_instruments(session)}


def _everything_the_live_side_reads(settings: Settings, instance: DagsterInstance, instruments) -> dict:
    return {
        "store": _published_bytes(settings.data_dir),
        "registry": _registry_rows(settings.database_url),
        "materialized": {
            name: instance.get_materialized_partitions(AssetKey(name)) for name in PERCEPTION_ASSETS
        },
        "newest_regime_bar": newest_regime_bar(instance),
        "live_decisions": _live_decisions(settings.data_dir, instruments),
    }


@dataclass(frozen=True)
class Published:
    """A home where bars, features and regimes were materialized through Dagster, and what it held then."""

    settings: Settings
    instance: DagsterInstance
    instruments: tuple
    before: dict

    def unchanged(self) -> bool:
        return _everything_the_live_side_reads(self.settings, self.instance, self.instruments) == self.before


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    settings = Settings.from_env({"EMP_HOME": str(tmp_path_factory.mktemp("faults") / "home")})
    settings.home.mkdir(parents=True)
    upgrade_database(settings.database_url)
    universe = configured_universe(settings.data)
    first, published = pd.Timestamp(SEEDED[0], tz="UTC"), PUBLISHED_DAYS[0]
    bars = configured_source(settings.data).fetch(list(universe.symbols), *SEEDED)
    DatedFrameStore(settings.data_dir, "market_bars").write_window(
        bars.loc[bars["date"] < published], first, published
    )
    defs, instance = build_definitions(settings), DagsterInstance.ephemeral()
    assert defs.resolve_job_def("universe_job").execute_in_process(instance=instance).success
    assert _materialize(defs, instance, ("2006-01", "2008-10"), ("sensory_features",)).success
    assert _materialize(defs, instance, PUBLISHED, PERCEPTION_ASSETS).success
    assert _materialize(defs, instance, FEATURES_ONLY, ("market_bars", "sensory_features")).success
    before = _everything_the_live_side_reads(settings, instance, universe.instruments)
    assert before["live_decisions"][0] == PUBLISHED_DAYS[1]
    assert len(before["live_decisions"][1]) == len(universe.instruments)  # decisions a change would move
    return Published(settings, instance, universe.instruments, before)


def _unbalance_probabilities(classify):
    """A classifier fault injected by the test: the first row's probabilities no longer sum to one."""

    def faulty(*args, **kwargs) -> pd.DataFrame:
        regimes = classify(*args, **kwargs)
        regimes.loc[regimes.index[0], PROBABILITY_COLUMNS[0]] += 0.5
        return regimes

    return faulty


def test_a_failing_blocking_check_leaves_store_registry_partitions_and_live_decisions_unchanged(
    published: Published, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(perception_assets, "classify_by_year", _unbalance_probabilities(classify_by_year))
    result = _materialize(
        build_definitions(published.settings), published.instance, FAULTY, ("market_regimes",)
    )

    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert (
        "market_regimes: blocking check(s) probabilities_sum_to_one failed; nothing was published" in failure
    )
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {"probabilities_sum_to_one": False, "labels_known": True}
    assert not result.asset_materializations_for_node("market_regimes")
    assert published.unchanged()
    quarantined = published.settings.data_dir / QUARANTINE_DIR / "market_regimes" / result.run_id
    assert json.loads((quarantined / "reasons.json").read_text())[0]["check"] == "probabilities_sum_to_one"


class DamagedSample(SampleSource):
    """The bundled sample as a failing vendor would serve it: ``damage`` rewrites (or refuses) the answer."""

    def __init__(self, damage) -> None:
        super().__init__()
        self.damage = damage

    def _fetch_raw(self, symbols: list[str], start: date, end: date) -> pd.DataFrame:
        return self.damage(super()._fetch_raw(symbols, start, end))


def _drop_last_sessions(raw: pd.DataFrame) -> pd.DataFrame:
    return raw.loc[raw["date"] < pd.Timestamp("2008-12-24", tz="UTC")]


def _one_price_of_1e300(raw: pd.DataFrame) -> pd.DataFrame:
    raw = raw.copy()
    raw.loc[
        raw["date"] == pd.Timestamp("2008-12-15", tz="UTC"), ["open", "high", "low", "close", "adj_close"]
    ] = 1e300
    return raw


def _vendor_down(raw: pd.DataFrame) -> pd.DataFrame:
    raise MarketDataError("vendor answered 503 Service Unavailable")


@pytest.mark.parametrize(
    ("damage", "failed_check"),
    [
        (_drop_last_sessions, "keeps_stored_history"),
        (_one_price_of_1e300, "prices_within_bounds"),
        (_vendor_down, None),
    ],
    ids=["short source", "implausible bar", "source down"],
)
def test_a_bad_source_leaves_store_registry_partitions_and_live_decisions_unchanged(
    published: Published, monkeypatch: pytest.MonkeyPatch, damage, failed_check
) -> None:
    monkeypatch.setattr(MarketDataResource, "build_source", lambda self: DamagedSample(damage))
    result = _materialize(
        build_definitions(published.settings), published.instance, PUBLISHED, ("market_bars",)
    )

    assert not result.success
    if failed_check is not None:
        evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert evaluations[failed_check] is False
    assert published.unchanged()
