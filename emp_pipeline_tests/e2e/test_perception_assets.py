"""sensory_features and market_regimes materialized by Dagster: split-independent, idempotent, checked.

Bars since 2004, and the features of the days before the tested range, are seeded straight into the Parquet
store (what `market_bars` and earlier `sensory_features` runs would have written, the latter computed by the
asset's own function), so these runs materialize only the perception assets on a short range while reading
years of look-back.
"""

import base64
import json
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, Definitions
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from sqlalchemy import func, select

from emp_pipeline.data.sample import load_sample_macro_frame
from emp_pipeline.definitions import build_definitions
from emp_pipeline.defs.perception.assets import regime_frame_problems, settled_rows_with_nan
from emp_pipeline.defs.perception.resources import FredResource
from emp_pipeline.domain.anchored_perception import compute_features_by_year
from emp_pipeline.domain.bars import normalise_bars
from emp_pipeline.domain.regimes import REGIME_LABELS
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.environment import configured_source, configured_universe
from emp_pipeline.registry.engine import session_scope, shared_engine
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.registry.models import MarketRegime
from emp_pipeline.settings import Settings
from emp_pipeline.storage.parquet_frames import DatedFrameStore

# Month partitions across a year boundary (a new HMM fit); the two-run variant splits inside 2009's block,
# so its February is computed by a run that starts after January 1.
RANGE = ("2008-11", "2009-02")
SPLIT = (("2008-11", "2009-01"), ("2009-02", "2009-02"))
RANGE_START = pd.Timestamp("2008-11-01", tz="UTC")
SEEDED_BARS = (date(2004, 8, 19), date(2009, 2, 28))
PERCEPTION = ("sensory_features", "market_regimes")


@pytest.fixture(scope="module")
def sample_bars() -> pd.DataFrame:
    settings = Settings.from_env({"EMP_HOME": "/nonexistent"})
    symbols = [meta.symbol for meta in configured_universe(settings.data).instruments]
    return normalise_bars(configured_source(settings.data).fetch(symbols, *SEEDED_BARS))


@pytest.fixture(scope="module")
def earlier_features(sample_bars) -> pd.DataFrame:
    """The features of every day before RANGE, as earlier runs of sensory_features stored them."""
    cortex = SensoryCortex(
        configured_universe(Settings.from_env({"EMP_HOME": "/nonexistent"}).data).instruments
    )
    first, end = sample_bars["date"].min(), RANGE_START
    return compute_features_by_year(cortex, sample_bars, load_sample_macro_frame(), first, end)


def _home(root, name: str, bars: pd.DataFrame, features: pd.DataFrame, classifier: str = "rules") -> Settings:
    settings = Settings.from_env({"EMP_HOME": str(root / name), "EMP_REGIME_CLASSIFIER": classifier})
    settings.home.mkdir(parents=True)
    upgrade_database(settings.database_url)
    first, end = bars["date"].min(), pd.Timestamp(SEEDED_BARS[1] + timedelta(days=1), tz="UTC")
    DatedFrameStore(settings.data_dir, "market_bars").write_window(bars, first, end)
    DatedFrameStore(settings.data_dir, "sensory_features").write_window(features, first, RANGE_START)
    return settings


def _materialize(defs: Definitions, instance: DagsterInstance, start: str, end: str, assets=PERCEPTION):
    tags = {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}
    job = defs.resolve_job_def("daily_update_job").get_subset(
        asset_selection={defs.resolve_assets_def(name).key for name in assets}
    )
    result = job.execute_in_process(instance=instance, tags=tags)
    assert result.success
    return result


def _stored(settings: Settings, name: str) -> pd.DataFrame:
    return DatedFrameStore(settings.data_dir, name).read_window()


def _registry(settings: Settings) -> pd.DataFrame:
    with session_scope(shared_engine(settings.database_url)) as session:
        rows = session.execute(select(MarketRegime)).scalars().all()
        return pd.DataFrame(
            [
                (r.symbol, r.date, r.classifier, r.regime, json.dumps(r.probabilities, sort_keys=True))
                for r in rows
            ],
            columns=["symbol", "date", "classifier", "regime", "probabilities"],
        ).sort_values(["symbol", "date", "classifier"], ignore_index=True)


def _registry_count(settings: Settings) -> int:
    with session_scope(shared_engine(settings.database_url)) as session:
        return session.execute(select(func.count()).select_from(MarketRegime)).scalar_one()


@pytest.mark.parametrize("classifier", ["rules", "hmm"])
def test_a_day_is_stored_alike_whether_the_range_ran_in_one_run_or_two(
    tmp_path, sample_bars, earlier_features, classifier
):
    whole = _home(tmp_path, "whole", sample_bars, earlier_features, classifier)
    halves = _home(tmp_path, "halves", sample_bars, earlier_features, classifier)
    _materialize(build_definitions(whole), DagsterInstance.ephemeral(), *RANGE)
    halves_defs, instance = build_definitions(halves), DagsterInstance.ephemeral()
    for part in SPLIT:
        _materialize(halves_defs, instance, *part)

    for name in PERCEPTION:
        pd.testing.assert_frame_equal(_stored(whole, name), _stored(halves, name), check_exact=True)
    pd.testing.assert_frame_equal(_registry(whole), _registry(halves))

    features = _stored(whole, "sensory_features")
    features = features.loc[features["date"] >= RANGE_START]
    regimes = _stored(whole, "market_regimes")
    trading_days = len(sample_bars.loc[sample_bars["date"] >= RANGE_START])
    assert len(features) == len(regimes) == trading_days
    assert regimes["date"].min() >= RANGE_START
    # Four years of bars lie behind the range: nothing is warming up, and the crash shows in the labels.
    assert not features["warmup"].any() and not regimes["warmup"].any()
    assert regimes["regime"].nunique() >= 2
    assert set(_registry(whole)["classifier"]) == {classifier}


def test_rematerializing_replaces_registry_rows_and_stored_frames(tmp_path, sample_bars, earlier_features):
    settings = _home(tmp_path, "home", sample_bars, earlier_features)
    defs, instance = build_definitions(settings), DagsterInstance.ephemeral()
    _materialize(defs, instance, *RANGE)
    regimes_once, rows_once = _stored(settings, "market_regimes"), _registry_count(settings)
    _materialize(defs, instance, *RANGE)
    _materialize(defs, instance, "2009-01", "2009-01")

    assert rows_once == len(regimes_once) > 0
    assert _registry_count(settings) == rows_once
    pd.testing.assert_frame_equal(_stored(settings, "market_regimes"), regimes_once)


def _latest_metadata(instance: DagsterInstance, defs: Definitions, name: str) -> dict:
    event = instance.get_latest_materialization_event(defs.resolve_assets_def(name).key)
    return event.asset_materialization.metadata


def test_checks_pass_and_the_ui_gets_the_share_table_and_the_regime_chart(
    tmp_path, sample_bars, earlier_features
):
    settings = _home(tmp_path, "home", sample_bars, earlier_features)
    defs, instance = build_definitions(settings), DagsterInstance.ephemeral()
    result = _materialize(defs, instance, *RANGE)

    checks = {
        (e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()
    }
    assert checks == {
        ("sensory_features", "features_complete_after_warmup"): True,
        ("market_regimes", "probabilities_sum_to_one"): True,
        ("market_regimes", "labels_known"): True,
    }
    features_meta = _latest_metadata(instance, defs, "sensory_features")
    assert features_meta["macro_source"].value == "sample"
    assert "credit_spread" in features_meta["macro_coverage"].value

    regimes_meta = _latest_metadata(instance, defs, "market_regimes")
    assert regimes_meta["classifier"].value == "rules"
    share = regimes_meta["regime_share"].value
    assert all(symbol in share for symbol in ("^GSPC", "^IXIC", "GOOG"))
    chart = regimes_meta["regime_chart"].value
    prefix = "![regimes](data:image/png;base64,"
    assert chart.startswith(prefix) and chart.endswith(")")
    png = base64.b64decode(chart[len(prefix) : -1])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and 5_000 < len(png) < 150_000
    # The picture rides on the newest month only: an older month of the range carries no copy of it.
    older = instance.fetch_materializations(
        defs.resolve_assets_def("market_regimes").key, limit=1, ascending=True
    ).records[0]
    assert "regime_chart" not in older.asset_materialization.metadata


def test_check_rules_catch_broken_frames():
    features = pd.DataFrame(
        {
            "symbol": ["A", "A", "B"],
            "date": pd.to_datetime(["2009-01-02", "2009-01-05", "2009-01-05"], utc=True),
            "what_log_return_1": [np.nan, np.nan, 0.01],
            "warmup": [True, False, False],
        }
    )
    assert settled_rows_with_nan(features, ("what_log_return_1",)).tolist() == [False, True, False]

    regimes = pd.DataFrame(
        {
            "symbol": ["A", "A", "A"],
            "date": pd.to_datetime(["2009-01-02", "2009-01-05", "2009-01-06"], utc=True),
            "regime": ["range", "crash", "bull_trend"],
            **{f"prob_{label}": [0.25, 0.25, 0.3] for label in REGIME_LABELS},
        }
    )
    regimes.loc[0, "prob_range"] = np.nan
    bad_sum, unknown = regime_frame_problems(regimes)
    assert bad_sum.tolist() == [True, False, True]
    assert unknown.tolist() == [False, True, False]


class _FakeFred(BaseHTTPRequestHandler):
    """fred/series/observations answering every series with a made-up daily level (FRED's JSON shape)."""

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        days = pd.bdate_range(query["observation_start"][0], query["observation_end"][0])
        level = {"DFF": 2.0, "DGS10": 4.0, "VIXCLS": 20.0, "DAAA": 5.0, "DBAA": 6.5, "DCOILWTICO": 70.0}
        base = level.get(query["series_id"][0], 1.0)
        observations = [
            {"date": str(day.date()), "value": "." if i % 17 == 0 else f"{base + 0.01 * (i % 50):.2f}"}
            for i, day in enumerate(days)
        ]
        body = json.dumps({"count": len(observations), "observations": observations}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_fred() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeFred)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fred"
    server.shutdown()
    server.server_close()


def test_features_read_fred_when_a_key_is_configured(tmp_path, sample_bars, earlier_features, fake_fred):
    settings = _home(tmp_path, "home", sample_bars, earlier_features)
    plain = build_definitions(settings)
    resources = {**plain.resources, "fred": FredResource(api_key="test-key", base_url=fake_fred)}
    defs = Definitions(
        assets=plain.assets, asset_checks=plain.asset_checks, jobs=plain.jobs, resources=resources
    )
    instance = DagsterInstance.ephemeral()
    _materialize(defs, instance, "2009-02", "2009-02", assets=("sensory_features",))

    features = DatedFrameStore(settings.data_dir, "sensory_features").read_window("2009-02-02")
    assert len(features) == len(sample_bars.loc[sample_bars["date"] >= pd.Timestamp("2009-02-02", tz="UTC")])
    assert _latest_metadata(instance, defs, "sensory_features")["macro_source"].value == "fred"
    # The bundled sample has no policy rate: only FRED can have filled it.
    assert features["why_policy_rate_available"].eq(1.0).all()
    assert features["why_policy_rate_level"].between(2.0, 2.5).all()


class _FredOutage(BaseHTTPRequestHandler):
    """FRED down: every request answers 503."""

    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error_code": 503, "error_message": "Service Unavailable"}')

    def log_message(self, *args) -> None:
        pass


def test_a_fred_outage_degrades_why_and_says_so_instead_of_failing_the_update(
    tmp_path, sample_bars, earlier_features
):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FredOutage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = _home(tmp_path, "home", sample_bars, earlier_features)
        plain = build_definitions(settings)
        fred = FredResource(api_key="test-key", base_url=f"http://127.0.0.1:{server.server_address[1]}/fred")
        defs = Definitions(
            assets=plain.assets,
            asset_checks=plain.asset_checks,
            jobs=plain.jobs,
            resources={**plain.resources, "fred": fred},
        )
        instance = DagsterInstance.ephemeral()
        _materialize(defs, instance, "2009-02", "2009-02", assets=("sensory_features",))
    finally:
        server.shutdown()
        server.server_close()
    features = DatedFrameStore(settings.data_dir, "sensory_features").read_window("2009-02-02")
    # the update went through
    assert len(features) == len(sample_bars.loc[sample_bars["date"] >= pd.Timestamp("2009-02-02", tz="UTC")])
    metadata = _latest_metadata(instance, defs, "sensory_features")
    assert metadata["macro_source"].value == "fred"
    assert metadata["macro_status"].value.startswith("degraded: FRED unavailable for DFF, DGS10, VIXCLS")
    assert "WHY is neutral (availability flag 0)" in metadata["macro_status"].value
    assert (
        features["why_policy_rate_available"].eq(0.0).all()
        and features["why_policy_rate_level"].eq(0.0).all()
    )


def test_an_unknown_regime_classifier_is_refused_when_settings_are_read():
    with pytest.raises(ValueError, match="EMP_REGIME_CLASSIFIER='magic'"):
        Settings.from_env({"EMP_HOME": "/nonexistent", "EMP_REGIME_CLASSIFIER": "magic"})
