"""Intraday speed (issue 12 point 6): hourly FX research, a year of M1 bars ingested, an hourly parity replay.

Four figures, each the median of ``--repeats`` runs, with their targets on a quiet machine:

- ``intraday_features_s`` < 2: features and rule regimes of 10 FX symbols x 2 years of H1 bars (~12,500
  bars each), computed as the perception assets compute them (`window_features`, `window_regimes` with the
  H1 windows of `StudyWindows`: year-anchored history, the regime ranking over three years of hours).
- ``intraday_evolution_s`` < 60: the GA, 50 generations x 200 strategies, on that panel (FX H1
  annualisation, the instruments' spread and swaps charged).
- ``m1_ingest_s`` < 10: one year of M1 bars of one symbol (~372,000 bars) from a CSV file into the lake,
  through the real path: the `market_bars` asset over the year's FX-day partitions in one run (CSV source,
  timeframe and calendar checks, bar checks, staging, the Parquet IO manager), executed in process on an
  ephemeral Dagster instance. Each repeat reads a fresh copy of the file into a fresh lake, so neither the
  CSV parse cache nor stored history helps.
- ``intraday_parity_replay_s`` < 30: one strategy on the 10 symbols replayed bar by bar over the last year
  of the H1 bars (the year before is its history), through benchmarks/parity.py's replay.

The data is synthetic (prices, not speed, would differ on real data): FX random walks switching between
regimes of drift and volatility (`synthetic.RegimeSpec`, hourly, scaled to the bar size) on the bar times
the FX calendar has (24x5: Sunday 17:00 to Friday 17:00 New York, weekends closed), prices rounded to 5
decimals, standard FX contract terms. The M1 CSV file is written to a temporary directory.

Run: .venv/bin/python benchmarks/intraday.py [--repeats 3]
Quick run: .venv/bin/python benchmarks/intraday.py --symbols 2 --h1-days 40 --parity-days 5 --m1-days 3 \
    --generations 2 --population 8
The machine may be shared: the figures are upper bounds. Each figure's ``*_cpu_s`` line beside it is the
process's CPU time per run (mean of the repeats; the work is single-threaded), closer than the wall time
to what a quiet machine takes.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import DagsterInstance
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from parity import replay_parity

from emp_pipeline.definitions import build_definitions
from emp_pipeline.domain.anchored_perception import window_features, window_regimes
from emp_pipeline.domain.backtest import market_arrays
from emp_pipeline.domain.bars import normalise_bars
from emp_pipeline.domain.calendars import CALENDAR_24X5
from emp_pipeline.domain.evolution import EvolutionConfig, evolve
from emp_pipeline.domain.genome import feature_panel
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta
from emp_pipeline.domain.sensory import SensoryCortex
from emp_pipeline.domain.study_windows import StudyWindows
from emp_pipeline.domain.synthetic import RegimeSpec
from emp_pipeline.domain.timeframes import Timeframe, bar_open_times
from emp_pipeline.settings import Settings
from emp_pipeline.storage.datasets import MARKET_BARS

START = pd.Timestamp("2019-01-01", tz="UTC")
# (symbol, quote currency, price level): majors and crosses quoted to 5 decimals.
FX_PAIRS: tuple[tuple[str, str, float], ...] = (
    ("EURUSD", "USD", 1.13),
    ("GBPUSD", "USD", 1.28),
    ("AUDUSD", "USD", 0.70),
    ("NZDUSD", "USD", 0.66),
    ("USDCAD", "CAD", 1.33),
    ("USDCHF", "CHF", 0.99),
    ("EURGBP", "GBP", 0.88),
    ("EURCHF", "CHF", 1.12),
    ("GBPCHF", "CHF", 1.27),
    ("AUDCAD", "CAD", 0.94),
)
# Hourly log-return laws: 5-7% a year in calm ranges and trends (drifting ~7% a year), ~17% in stress;
# regimes last days to weeks of hours.
HOURLY_FX_REGIMES: tuple[RegimeSpec, ...] = (
    RegimeSpec("bull_trend", drift=1.2e-5, volatility=0.0008, mean_duration=600.0),
    RegimeSpec("bear_trend", drift=-1.2e-5, volatility=0.0009, mean_duration=450.0),
    RegimeSpec("range", drift=0.0, volatility=0.0006, mean_duration=500.0),
    RegimeSpec("high_volatility", drift=0.0, volatility=0.0022, mean_duration=200.0),
)


def fx_instrument(symbol: str, quote_currency: str) -> InstrumentMeta:
    """Standard FX contract terms: 5 digits, pip 0.0001, lot 100,000, 0.01 lot steps, small swaps."""
    return InstrumentMeta(
        symbol=symbol,
        name=f"synthetic {symbol}",
        asset_class=AssetClass.FX,
        quote_currency=quote_currency,
        tick_size=0.00001,
        pip_position=4,
        lot_size=100_000,
        min_volume=1_000,
        step_volume=1_000,
        calendar=CALENDAR_24X5,
        swap_long=-0.5,
        swap_short=0.2,
        spread_pips=0.8,
    )


def _regime_walk(
    rng: np.random.Generator, n_bars: int, hours_per_bar: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bar (drift, volatility) of one symbol: HOURLY_FX_REGIMES in runs, scaled to the bar size.

    A run ends at each bar with probability 1 / (its mean duration in bars), then the next regime is drawn
    uniformly; vectorised, so a year of minutes takes no longer than a year of hours to draw.
    """
    n_regimes = len(HOURLY_FX_REGIMES)
    mean_bars = np.mean([spec.mean_duration for spec in HOURLY_FX_REGIMES]) / hours_per_bar
    runs = np.cumsum(rng.random(n_bars) < 1.0 / mean_bars)
    regime = rng.integers(0, n_regimes, size=runs[-1] + 1)[runs]
    drift = np.array([spec.drift for spec in HOURLY_FX_REGIMES]) * hours_per_bar
    volatility = np.array([spec.volatility for spec in HOURLY_FX_REGIMES]) * math.sqrt(hours_per_bar)
    return drift[regime], volatility[regime]


def fx_bars(
    n_symbols: int, timeframe: Timeframe, start: pd.Timestamp, end: pd.Timestamp, seed: int
) -> tuple[pd.DataFrame, tuple[InstrumentMeta, ...]]:
    """Synthetic bid bars of the first `n_symbols` FX pairs on every `timeframe` bar the FX calendar has in
    [start, end), and their instruments: each bar opens at the previous close, highs and lows reach past
    the body by a draw of the bar's volatility, prices are rounded to 5 decimals."""
    if not 1 <= n_symbols <= len(FX_PAIRS):
        raise ValueError(f"choose 1 to {len(FX_PAIRS)} symbols, not {n_symbols}")
    opens = bar_open_times(CALENDAR_24X5, timeframe, start, end)
    hours_per_bar = timeframe.duration / pd.Timedelta(hours=1)
    rng = np.random.default_rng(seed)
    frames = []
    for symbol, _, level in FX_PAIRS[:n_symbols]:
        drift, volatility = _regime_walk(rng, len(opens), hours_per_bar)
        steps = drift - 0.5 * volatility**2 + volatility * rng.standard_normal(len(opens))
        close = level * np.exp(np.cumsum(steps))
        open_ = np.concatenate([[level], close[:-1]])
        reach = np.abs(rng.standard_normal((2, len(opens)))) * 0.5 * volatility
        # Rounding is monotonic, so low <= open, close <= high still holds after it.
        close, open_ = np.round(close, 5), np.round(open_, 5)
        frames.append(
            pd.DataFrame(
                {
                    "date": opens,
                    "symbol": symbol,
                    "open": open_,
                    "high": np.round(np.maximum(open_, close) * np.exp(reach[0]), 5),
                    "low": np.round(np.minimum(open_, close) * np.exp(-reach[1]), 5),
                    "close": close,
                    "adj_close": close,
                    "volume": rng.poisson(2_000 * hours_per_bar * volatility / 0.001).astype(float),
                }
            )
        )
    instruments = tuple(fx_instrument(symbol, quote) for symbol, quote, _ in FX_PAIRS[:n_symbols])
    return normalise_bars(pd.concat(frames, ignore_index=True), timeframe), instruments


def median_seconds(action: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Median wall time of `repeats` runs of `action`, their mean CPU time, and the last run's result."""
    timings, result = [], None
    cpu_began = time.process_time()
    for _ in range(repeats):
        began = time.perf_counter()
        result = action()
        timings.append(time.perf_counter() - began)
    return statistics.median(timings), (time.process_time() - cpu_began) / repeats, result


def h1_research(args: argparse.Namespace, figures: dict[str, float]) -> pd.DataFrame:
    """Time features + rule regimes, then the GA on their panel; returns the H1 bars for the replay."""
    end = START + pd.Timedelta(days=args.h1_days)
    bars, instruments = fx_bars(args.symbols, Timeframe.H1, START, end, seed=args.seed)
    windows = StudyWindows.for_universe(Timeframe.H1, [CALENDAR_24X5])
    compute_features = window_features(SensoryCortex(instruments))
    compute_regimes = window_regimes("rules", windows)

    def perceive() -> tuple[pd.DataFrame, pd.DataFrame]:
        features = compute_features(bars)
        return features, compute_regimes(bars, features)

    features_s, features_cpu_s, (features, regimes) = median_seconds(perceive, args.repeats)
    panel = feature_panel(features, regimes)
    market = market_arrays(
        bars,
        features,
        dates=panel.dates,
        symbols=panel.symbols,
        instruments={meta.symbol: meta for meta in instruments},
    )
    config = EvolutionConfig(
        population_size=args.population,
        generations=args.generations,
        periods_per_year=windows.periods_per_year,
    )
    evolution_s, evolution_cpu_s, result = median_seconds(
        lambda: evolve(panel, market, config, seed=args.seed), args.repeats
    )
    print(
        f"h1: {len(panel.symbols)} symbols x {len(panel.dates)} bars {panel.dates[0]}..{panel.dates[-1]}, "
        f"{len(panel.names)} features, settled regime rows {int((~regimes['warmup']).sum())}"
    )
    print(f"h1_bars={len(bars)}")
    print(f"strategies_evaluated={len(result.records)}")
    print(f"best_fitness={result.best.fitness:.4f}")
    print(f"intraday_features_cpu_s={features_cpu_s:.2f}")
    print(f"intraday_evolution_cpu_s={evolution_cpu_s:.2f}")
    figures["intraday_features_s"] = features_s
    figures["intraday_evolution_s"] = evolution_s
    return bars


M1_UNIVERSE = """\
name: intraday-benchmark-m1
timeframe: M1
start_date: {first}
end_date: {last}
instruments:
  - {{symbol: {symbol}, name: synthetic {symbol}, asset_class: fx, quote_currency: {quote},
     tick_size: 0.00001, pip_position: 4, lot_size: 100000, min_volume: 1000, step_volume: 1000,
     calendar: 24x5}}
"""


# The run's events still reach the instance; only the console log of every step event is silenced.
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _m1_settings(home: Path, universe_file: Path, csv_file: Path) -> Settings:
    folder = home / "csv"
    folder.mkdir(parents=True)
    shutil.copy(csv_file, folder / csv_file.name)  # a new path: the source parses it afresh
    return Settings.from_env(
        {
            "EMP_HOME": str(home / "emp_home"),
            "EMP_DATA_SOURCE": "csv",
            "EMP_CSV_DIR": str(folder),
            "EMP_UNIVERSE_FILE": str(universe_file),
        }
    )


def m1_ingest(args: argparse.Namespace, figures: dict[str, float]) -> None:
    """Time `market_bars` storing a CSV file of M1 bars over the FX days it spans, in one run."""
    symbol, quote, _ = FX_PAIRS[0]
    first = START.date()
    last = (START + pd.Timedelta(days=args.m1_days - 1)).date()
    with tempfile.TemporaryDirectory(prefix="emp-intraday-bench-") as tmp:
        root = Path(tmp)
        universe_file = root / "universe.yaml"
        universe_file.write_text(M1_UNIVERSE.format(first=first, last=last, symbol=symbol, quote=quote))
        partitions = (
            build_definitions(_m1_settings(root / "probe", universe_file, universe_file))
            .resolve_assets_def(MARKET_BARS.name)
            .partitions_def
        )
        keys = partitions.get_partition_keys()
        span = (
            partitions.time_window_for_partition_key(keys[0]).start,
            partitions.time_window_for_partition_key(keys[-1]).end,
        )
        bars, _ = fx_bars(1, Timeframe.M1, pd.Timestamp(span[0]), pd.Timestamp(span[1]), seed=args.seed)
        csv_file = root / f"{symbol}.csv"
        bars.assign(date=bars["date"].dt.strftime("%Y-%m-%d %H:%M:%S")).drop(
            columns=["symbol", "adj_close"]
        ).to_csv(csv_file, index=False, float_format="%.5f")
        tags = {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
        timings, cpu_s = [], 0.0
        for repeat in range(args.repeats):
            settings = _m1_settings(root / f"run{repeat}", universe_file, csv_file)
            defs = build_definitions(settings)
            job = defs.resolve_job_def("daily_update_job").get_subset(
                asset_selection={defs.resolve_assets_def(MARKET_BARS.name).key}
            )
            began, cpu_began = time.perf_counter(), time.process_time()
            result = job.execute_in_process(
                instance=DagsterInstance.ephemeral(), tags=tags, run_config=QUIET_RUN
            )
            timings.append(time.perf_counter() - began)
            cpu_s += time.process_time() - cpu_began
            stored = MARKET_BARS.read(settings.data_dir)
            if not result.success or len(stored) != len(bars):
                raise RuntimeError(
                    f"M1 ingest stored {len(stored)} of {len(bars)} bars (run success: {result.success})"
                )
    print(f"m1: {len(bars)} bars of {symbol} over {len(keys)} FX-day partitions {keys[0]}..{keys[-1]}")
    print(f"m1_bars={len(bars)}")
    print(f"m1_ingest_cpu_s={cpu_s / args.repeats:.2f}")
    figures["m1_ingest_s"] = statistics.median(timings)


def parity_replay(args: argparse.Namespace, bars: pd.DataFrame, figures: dict[str, float]) -> None:
    """Time the replay of the last `--parity-days` of the H1 bars (the earlier bars are its history)."""
    instruments = tuple(
        fx_instrument(symbol, quote) for symbol, quote, _ in FX_PAIRS[: bars["symbol"].nunique()]
    )
    end = bars["date"].max() + pd.Timedelta(hours=1)
    start = end - pd.Timedelta(days=args.parity_days)
    windows = StudyWindows.for_universe(Timeframe.H1, [CALENDAR_24X5])
    cpu_began = time.process_time()
    seconds, report = replay_parity(
        bars,
        instruments,
        start,
        end,
        window_features(SensoryCortex(instruments)),
        window_regimes("rules", windows),
        args.repeats,
    )
    print(report.describe())
    print(f"parity_bars={report.n_bars}")
    print(f"parity_passed={report.passed}")
    print(f"parity_strategy_bars_per_s={report.n_bars * len(report.symbols) / seconds:.0f}")
    print(f"intraday_parity_replay_cpu_s={(time.process_time() - cpu_began) / args.repeats:.2f}")
    figures["intraday_parity_replay_s"] = seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs per figure; the median is printed")
    parser.add_argument("--symbols", type=int, default=len(FX_PAIRS))
    parser.add_argument("--h1-days", type=int, default=731, help="calendar days of H1 bars from 2019-01-01")
    parser.add_argument("--parity-days", type=int, default=365, help="the replayed window: the last days")
    parser.add_argument("--m1-days", type=int, default=365, help="calendar days of M1 bars ingested")
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--population", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.repeats < 1 or args.parity_days >= args.h1_days or min(args.h1_days, args.m1_days) < 1:
        parser.error("need --repeats >= 1, --m1-days >= 1 and --parity-days < --h1-days")
    print(f"runs={args.repeats}")
    figures: dict[str, float] = {}
    bars = h1_research(args, figures)
    m1_ingest(args, figures)
    parity_replay(args, bars, figures)
    for name, seconds in figures.items():
        print(f"{name}={seconds:.2f}")


if __name__ == "__main__":
    main()
