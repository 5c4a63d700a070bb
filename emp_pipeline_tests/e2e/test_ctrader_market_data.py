"""EMP_DATA_SOURCE=ctrader end to end: the settings, the definitions built from them, and real Dagster runs of
instrument_universe and market_bars against the local cTrader server, the access token read from Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import redis
from dagster import DagsterInstance
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from emp_pipeline.auth.build import build_token_store
from emp_pipeline.definitions import build_definitions
from emp_pipeline.registry.engine import session_scope, shared_engine
from emp_pipeline.registry.instruments import load_instruments
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.settings import Settings
from emp_pipeline.storage.parquet_frames import DatedFrameStore
from emp_pipeline_tests.fakes.ctrader_server import FakeCTraderServer

ACCOUNT = 4242
REDIS_URL = "redis://127.0.0.1:6379/0"
D1_CODE = 12  # ProtoOATrendbarPeriod.D1, as the server stores it
FX_UNIVERSE = """
name: fx-from-ctrader
start_date: 2024-01-08
end_date: 2024-01-12
timeframe: D1
instruments:
  - {symbol: EURUSD, asset_class: fx, quote_currency: USD, tick_size: 0.0001, pip_position: 4,
     lot_size: 1000, min_volume: 1, step_volume: 1, calendar: 24x5}
  - {symbol: GOLD, asset_class: metal, quote_currency: USD, tick_size: 0.1, pip_position: 1,
     lot_size: 1, min_volume: 1, step_volume: 1, calendar: 24x5}
"""


def daily_bars_at_17_new_york(low: int, unit: int) -> list[dict[str, int]]:
    """Sunday..Thursday 22:00 UTC opens: the trading days Monday 8 .. Friday 12 January 2024. Each low is
    100 units above the last; open, close and high sit 40, 70 and 90 units above the low."""
    opens = [datetime(2024, 1, day, 22, tzinfo=UTC) for day in (7, 8, 9, 10, 11)]
    return [
        {"utcTimestampInMinutes": int(opened.timestamp()) // 60, "low": low + 100 * unit * i,
         "deltaOpen": 40 * unit, "deltaClose": 70 * unit, "deltaHigh": 90 * unit, "volume": 1_000 + i}
        for i, opened in enumerate(opens)
    ]  # fmt: skip


@pytest.fixture
def server() -> Iterator[FakeCTraderServer]:
    with FakeCTraderServer(account_ids=(ACCOUNT,)) as running:
        running.add_trendbars("EURUSD", D1_CODE, daily_bars_at_17_new_york(108_000, unit=1))  # 0.00001
        running.add_trendbars("XAUUSD", D1_CODE, daily_bars_at_17_new_york(265_000_000, unit=100))  # 0.001
        yield running


@pytest.fixture
def settings(
    tmp_path: Path, server: FakeCTraderServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    universe = tmp_path / "fx.yaml"
    universe.write_text(FX_UNIVERSE)
    prefix = f"emp:test:{uuid.uuid4().hex}:"
    environ = {
        "EMP_HOME": str(tmp_path / "home"),
        "EMP_DATA_SOURCE": "ctrader",
        "EMP_UNIVERSE_FILE": str(universe),
        "CTRADER_SYMBOL_MAP": "GOLD=XAUUSD",
        "CTRADER_CLIENT_ID": server.client_id,
        "CTRADER_CLIENT_SECRET": server.client_secret,
        "CTRADER_ACCOUNT_ID": str(ACCOUNT),
        "CTRADER_API_URL": server.url,
        "REDIS_URL": REDIS_URL,
        "EMP_TOKEN_KEY_PREFIX": prefix,
    }
    for name, value in environ.items():
        monkeypatch.setenv(name, value)  # secrets reach the resources as EnvVar, resolved at run time
    configured = Settings.from_env(environ)
    configured.home.mkdir(parents=True)
    upgrade_database(configured.database_url)
    store = build_token_store(
        client_id=server.client_id, redis_url=REDIS_URL, key_prefix=prefix, token_key=None
    )
    store.write_pair(server.issue_access_token(), "refresh-token", time.time() + 30 * 86_400, time.time())
    yield configured
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def test_the_ctrader_source_feeds_instrument_terms_and_daily_bars_through_dagster(settings: Settings) -> None:
    defs = build_definitions(settings)
    instance = DagsterInstance.ephemeral()

    assert defs.resolve_job_def("universe_job").execute_in_process(instance=instance).success
    # the venue's terms, read again, are no change of the stored ones (the run would refuse a change)
    assert defs.resolve_job_def("universe_job").execute_in_process(instance=instance).success
    with session_scope(shared_engine(settings.database_url)) as session:
        stored = {meta.symbol: meta for meta in load_instruments(session)}
    eurusd, gold = stored["EURUSD"], stored["GOLD"]
    assert (eurusd.tick_size, eurusd.pip_position, eurusd.lot_size, eurusd.min_volume) == (
        pytest.approx(0.00001), 4, 100_000.0, 1_000.0,
    )  # fmt: skip
    assert (gold.tick_size, gold.lot_size, gold.min_volume) == (pytest.approx(0.01), 100.0, 1.0)  # XAUUSD's

    tags = {ASSET_PARTITION_RANGE_START_TAG: "2024-01", ASSET_PARTITION_RANGE_END_TAG: "2024-01"}  # a month
    run = (
        defs.resolve_job_def("daily_update_job")
        .get_subset(asset_selection={defs.resolve_assets_def("market_bars").key})
        .execute_in_process(instance=instance, tags=tags)
    )
    assert run.success
    bars = DatedFrameStore(settings.data_dir, "market_bars").read_window()
    days = list(pd.date_range("2024-01-08", "2024-01-12", tz="UTC"))
    for symbol, low, unit in (("EURUSD", 1.08, 0.00001), ("GOLD", 2650.0, 0.001)):
        mine = bars.loc[bars["symbol"] == symbol]  # bid prices, as served, labelled Monday .. Friday
        assert list(mine["date"]) == days
        assert list(mine["low"]) == pytest.approx([low + 100 * unit * i for i in range(5)])
        assert list(mine["close"]) == pytest.approx([low + 100 * unit * i + 70 * unit for i in range(5)])
