"""Backtest kernel throughput against vectorbt, on the same moving-average crossover sweep.

1,000 strategies (fast x slow moving-average pairs) x 10 instruments x 5,000 daily bars, long when the fast
average is above the slow one, 10 bps fees per side. Both engines get the same precomputed signals and fill
at the next bar's open; ours marks equity per bar per strategy, sums sleeves into portfolios and counts
trades, vectorbt's ``Portfolio.from_signals`` simulates each (strategy, instrument) column. One core: both
are single-threaded. Cold start is measured in fresh subprocesses whose numba cache directory is empty.

Run: .venv/bin/python benchmarks/backtest_throughput.py [--repeats 3] [--vectorbt-strategies 1000]
The machine is shared: figures are medians and still upper bounds on the time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_STRATEGIES, N_INSTRUMENTS, N_BARS = 1000, 10, 5000
FEE_BPS = 10.0
FAST_WINDOWS = np.arange(2, 52)  # 50 fast averages
SLOW_WINDOWS = np.arange(60, 260, 10)  # x 20 slow averages = 1,000 strategies

COLD_START_SCRIPT = """
import time
start = time.perf_counter()
import numpy as np, pandas as pd
from emp_pipeline.domain.backtest import MarketArrays, RiskArrays, simulate_population
from emp_pipeline.domain.costs import Costs
prices = np.full((5, 1), 100.0)
dates = pd.date_range("2020-01-01", periods=5, tz="UTC")
market = MarketArrays(dates, ("X",), prices, prices, prices, prices, prices)
risk = RiskArrays(np.ones(1), np.ones(1), np.ones(1), np.ones(1, dtype=np.int64))
simulate_population(np.ones((1, 5, 1), dtype=np.int8), market, risk, Costs())
print(time.perf_counter() - start)
"""

VECTORBT_COLD_START_SCRIPT = """
import time
start = time.perf_counter()
import numpy as np, pandas as pd
import vectorbt as vbt
close = pd.DataFrame(np.full((5, 2), 100.0))
entries = pd.DataFrame(np.array([[1, 0], [0, 1], [0, 0], [1, 0], [0, 0]], dtype=bool))
vbt.Portfolio.from_signals(close, entries, ~entries, price=close, fees=0.001, freq="1D").total_return()
print(time.perf_counter() - start)
"""


def synthetic_prices(seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random-walk OHLC bars (n_bars, n_instruments) and a 14-bar ATR."""
    rng = np.random.Generator(np.random.PCG64(seed))
    log_returns = rng.normal(0.0003, 0.012, (N_BARS, N_INSTRUMENTS))
    close = 100.0 * np.exp(np.cumsum(log_returns, axis=0))
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0.0, 0.002, close.shape))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.004, close.shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.004, close.shape)))
    previous_close = np.vstack([close[:1], close[:-1]])
    true_range = np.maximum(high - low, np.maximum(abs(high - previous_close), abs(low - previous_close)))
    atr = pd.DataFrame(true_range).rolling(14).mean().to_numpy()
    return {"open": open_, "high": high, "low": low, "close": close, "atr": atr}


def moving_averages(close: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Trailing means (n_windows, n_bars, n_instruments); NaN until a window is full."""
    cumulative = np.vstack([np.zeros((1, close.shape[1])), np.cumsum(close, axis=0)])
    out = np.full((len(windows), *close.shape), np.nan)
    for k, window in enumerate(windows):
        out[k, window - 1 :] = (cumulative[window:] - cumulative[:-window]) / window
    return out


def crossover_signals(close: np.ndarray) -> np.ndarray:
    """int8 (n_strategies, n_bars, n_instruments): 1 while fast MA > slow MA, else 0."""
    fast = moving_averages(close, FAST_WINDOWS)
    slow = moving_averages(close, SLOW_WINDOWS)
    signals = np.empty((len(FAST_WINDOWS) * len(SLOW_WINDOWS), *close.shape), dtype=np.int8)
    k = 0
    for i in range(len(FAST_WINDOWS)):
        for j in range(len(SLOW_WINDOWS)):
            signals[k] = fast[i] > slow[j]
            k += 1
    return signals


def fresh_cache_seconds(script: str) -> float:
    """Seconds from interpreter start of work to the end of a first call, with an empty numba cache."""
    with tempfile.TemporaryDirectory() as cache_dir:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "NUMBA_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
    return float(done.stdout.strip().splitlines()[-1])


def run_ours(signals: np.ndarray, prices: dict[str, np.ndarray], repeats: int) -> tuple[float, object]:
    from emp_pipeline.domain.backtest import MarketArrays, RiskArrays, simulate_population
    from emp_pipeline.domain.costs import Costs

    dates = pd.date_range("2000-01-03", periods=N_BARS, freq="B", tz="UTC")
    symbols = tuple(f"SYN{i:02d}" for i in range(N_INSTRUMENTS))
    market = MarketArrays(
        dates, symbols, prices["open"], prices["high"], prices["low"], prices["close"], prices["atr"]
    )
    n = signals.shape[0]
    # Stops and holding limit out of reach: a plain signal-following backtest, as in vectorbt.
    risk = RiskArrays(np.full(n, 1e9), np.full(n, 1e9), np.ones(n), np.full(n, 10**9, dtype=np.int64))
    costs = Costs(fee_bps=FEE_BPS, slippage_bps=0.0)
    simulate_population(signals[:2], market, RiskArrays(*(a[:2] for a in vars(risk).values())), costs)
    timings, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = simulate_population(signals, market, risk, costs)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings), result


def run_vectorbt(
    signals: np.ndarray, prices: dict[str, np.ndarray], n_strategies: int
) -> tuple[float, np.ndarray]:
    """vectorbt on the first ``n_strategies`` of the sweep; columns are (strategy, instrument) pairs."""
    import vectorbt as vbt

    subset = signals[:n_strategies]
    # Our signal at bar t fills at t+1's open; vectorbt fills on the signal's own bar, so shift by one.
    held = np.zeros_like(subset, dtype=bool)
    held[:, 1:] = subset[:, :-1] == 1
    columns = n_strategies * N_INSTRUMENTS
    entries = pd.DataFrame(held.transpose(1, 0, 2).reshape(N_BARS, columns))
    exits = pd.DataFrame(~entries.to_numpy())
    close = pd.DataFrame(np.tile(prices["close"], (1, n_strategies)))
    open_ = pd.DataFrame(np.tile(prices["open"], (1, n_strategies)))
    tiny = slice(0, 2)
    vbt.Portfolio.from_signals(
        close.iloc[:, tiny],
        entries.iloc[:, tiny],
        exits.iloc[:, tiny],
        price=open_.iloc[:, tiny],
        fees=FEE_BPS * 1e-4,
        init_cash=1.0 / N_INSTRUMENTS,
        freq="1D",
    ).final_value()
    start = time.perf_counter()
    portfolio = vbt.Portfolio.from_signals(
        close, entries, exits, price=open_, fees=FEE_BPS * 1e-4, init_cash=1.0 / N_INSTRUMENTS, freq="1D"
    )
    final_value = portfolio.final_value().to_numpy()
    seconds = time.perf_counter() - start
    return seconds, final_value.reshape(n_strategies, N_INSTRUMENTS).sum(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vectorbt-strategies", type=int, default=N_STRATEGIES)
    parser.add_argument("--skip-cold-start", action="store_true")
    args = parser.parse_args()

    prices = synthetic_prices()
    signals = crossover_signals(prices["close"])
    strategy_bars = signals.size
    print(
        f"population={signals.shape[0]} instruments={N_INSTRUMENTS} bars={N_BARS} "
        f"strategy_bars={strategy_bars}"
    )

    cold_start = None if args.skip_cold_start else fresh_cache_seconds(COLD_START_SCRIPT)
    ours_seconds, ours = run_ours(signals, prices, args.repeats)
    ours_rate = strategy_bars / ours_seconds
    print(
        f"ours: median {ours_seconds:.3f} s over {args.repeats} runs, "
        f"mean trades per strategy {ours.trade_counts.mean():.1f}"
    )

    figures: dict[str, str] = {
        "strategy_bars": str(strategy_bars),
        "kernel_s": f"{ours_seconds:.3f}",
        "strategy_bars_per_s": f"{ours_rate:.0f}",
    }
    if cold_start is not None:
        figures["cold_start_s"] = f"{cold_start:.2f}"
    try:
        import vectorbt  # noqa: F401
    except ImportError:
        print("vectorbt is not installed (pip install 'emp-pipeline[bench]'); reporting our figures only")
        figures["vectorbt_strategy_bars_per_s"] = "nan"
        figures["ratio_vs_vectorbt"] = "nan"
    else:
        n_vbt = min(args.vectorbt_strategies, signals.shape[0])
        vbt_seconds, vbt_final = run_vectorbt(signals, prices, n_vbt)
        vbt_rate = n_vbt * N_INSTRUMENTS * N_BARS / vbt_seconds
        # Same signals, same fills: final portfolio values agree up to how each engine sizes around the fee
        # (vectorbt buys cash / (1 + fee) of notional, ours buys the whole sleeve and pays the fee on top).
        difference = np.max(np.abs(vbt_final - ours.equity[:n_vbt, -1]) / vbt_final)
        print(
            f"vectorbt: {vbt_seconds:.3f} s on {n_vbt} strategies; "
            f"max relative final-value difference {difference:.2e}"
        )
        figures["vectorbt_s"] = f"{vbt_seconds:.3f}"
        figures["vectorbt_strategy_bars_per_s"] = f"{vbt_rate:.0f}"
        figures["ratio_vs_vectorbt"] = f"{ours_rate / vbt_rate:.1f}"
        figures["final_value_max_rel_diff"] = f"{difference:.2e}"
        if not args.skip_cold_start:
            figures["vectorbt_cold_start_s"] = f"{fresh_cache_seconds(VECTORBT_COLD_START_SCRIPT):.2f}"
    for name, value in figures.items():
        print(f"{name}={value}")


if __name__ == "__main__":
    main()
