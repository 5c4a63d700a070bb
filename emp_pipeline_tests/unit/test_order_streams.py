"""Identical orders are read from the kernel's fills, and the simplest of a group is kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.domain.backtest import MarketArrays, StrategyBacktest, simulate_strategy
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.genome import (
    Condition,
    FeaturePanel,
    Genome,
    RiskGenes,
    RuleGroup,
    genome_conditions,
    panel_signals,
)
from emp_pipeline.domain.order_streams import identical_order_merges, same_orders
from emp_pipeline.domain.regimes import REGIME_LABELS

N_BARS = 120


def _world() -> tuple[FeaturePanel, MarketArrays]:
    rng = np.random.default_rng(5)
    dates = pd.date_range("2021-01-04", periods=N_BARS, freq="B", tz="UTC")
    wave = np.sin(np.arange(N_BARS) / 4.0)[:, None]
    values = np.stack([wave, np.full_like(wave, 1.0), -wave])
    panel = FeaturePanel(
        dates=dates,
        symbols=("X",),
        names=("what_x", "what_one", "what_minus_x"),
        values=values,
        usable=np.ones((N_BARS, 1), dtype=bool),
        regime_codes=np.zeros((N_BARS, 1), dtype=np.int8),
    )
    close = 100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.01, size=(N_BARS, 1)), axis=0)
    market = MarketArrays(dates, ("X",), close, close * 1.002, close * 0.998, close, np.full_like(close, 5.0))
    return panel, market


def _genome(entry=None, max_hold: int = 300, exit_rule=None) -> Genome:
    return Genome(
        direction="long",
        long_entry=entry if entry is not None else Condition("what_x", "crosses_above", 0.0),
        short_entry=None,
        exit=exit_rule if exit_rule is not None else Condition("what_x", "crosses_below", 0.0),
        regimes=REGIME_LABELS,
        risk=RiskGenes(stop_atr=8.0, take_profit_atr=16.0, position_fraction=0.2, max_holding_bars=max_hold),
    )


def _backtests(genomes: dict[str, Genome]) -> dict[str, StrategyBacktest]:
    panel, market = _world()
    costs = Costs(fee_bps=1.0, slippage_bps=1.0)
    return {name: simulate_strategy(g, panel_signals(g, panel), market, costs) for name, g in genomes.items()}


def test_strategies_trading_alike_merge_into_the_simplest_and_others_stay():
    always = Condition("what_one", ">", 0.0)
    genomes = {
        # Equal to "base" in every order: a holding limit never reached, a condition that always holds.
        "longer_hold": _genome(max_hold=400),
        "padded": _genome(entry=RuleGroup("all", (Condition("what_x", "crosses_above", 0.0), always))),
        "base": _genome(),
        # Different orders: the holding limit binds, or the entry differs.
        "short_hold": _genome(max_hold=2),
        "other_entry": _genome(entry=Condition("what_minus_x", "crosses_above", 0.5)),
        "never": _genome(entry=Condition("what_one", "<", 0.0)),
        "never_too": _genome(entry=Condition("what_one", "<", -1.0)),
    }
    backtests = _backtests(genomes)
    assert len(backtests["base"].trades) >= 5 and backtests["never"].trades.empty
    # The holding limit is the only difference, and it was never reached.
    assert backtests["base"].trades["exit_reason"].eq("signal").all()
    assert same_orders(backtests["base"], backtests["longer_hold"])
    assert not same_orders(backtests["base"], backtests["short_hold"])

    conditions = {name: genome_conditions(genome) for name, genome in genomes.items()}
    merges = identical_order_merges(backtests, conditions, preference=list(genomes))
    # "longer_hold" comes first in preference and is as simple as "base": it is the one kept.
    assert {(m.strategy_id, m.kept_id) for m in merges} == {
        ("padded", "longer_hold"),
        ("base", "longer_hold"),
    }
    padded = next(m for m in merges if m.strategy_id == "padded")
    assert (padded.conditions, padded.kept_conditions, padded.trades) == (3, 2, len(backtests["base"].trades))
    assert padded.reason("2021-01") == (
        f"merged into longer_hold: identical out-of-sample orders in 2021-01 ({padded.trades} trades); "
        "kept the simpler (2 conditions, this one 3)"
    )


def test_the_simpler_strategy_is_kept_whatever_the_preference():
    genomes = {
        "padded": _genome(
            entry=RuleGroup(
                "all", (Condition("what_x", "crosses_above", 0.0), Condition("what_one", ">", 0.0))
            )
        ),
        "base": _genome(),
    }
    merges = identical_order_merges(
        _backtests(genomes), {n: genome_conditions(g) for n, g in genomes.items()}, ["padded", "base"]
    )
    assert [(m.strategy_id, m.kept_id) for m in merges] == [("padded", "base")]


def test_preference_must_name_every_strategy_once():
    backtests = _backtests({"base": _genome()})
    with pytest.raises(ValueError, match="exactly once"):
        identical_order_merges(backtests, {"base": 2}, ["base", "base"])
