"""Champions that would place identical orders are one strategy: keep the simplest, merge the rest.

Two genomes can differ and still trade alike: a ``max_holding_bars`` never reached, an exit rule that never
fires first, a condition that always holds where the others do. Whether they do is read from the kernel,
not from the genes: each strategy is backtested (``simulate_strategy``) on the same out-of-sample window,
and its *order stream* is every fill it made (symbol, direction, entry and exit bar, prices, units) plus the
order due at the next open. Equal streams mean the live account would see the same orders; why a position
closed (a signal, or the holding limit on the same bar) does not change the order and is not compared.

A group of equal streams keeps the strategy with the fewest rule conditions (then the caller's order of
preference); the others are merged into it. Strategies that made no trade in the window are never merged:
the window shows nothing they would do, so it cannot show that they would do the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from emp_pipeline.domain.backtest import StrategyBacktest

ORDER_COLUMNS: tuple[str, ...] = (
    "symbol",
    "direction",
    "entry_date",
    "exit_date",
    "entry_price",
    "exit_price",
    "units",
)
PENDING_ORDER_COLUMNS: tuple[str, ...] = (
    "direction",
    "units",
    "exit_at_next_open",
    "enter_at_next_open",
    "units_at_next_open",
)


def same_orders(first: StrategyBacktest, second: StrategyBacktest) -> bool:
    """True when both backtests filled exactly the same orders and have the same order due next."""
    return _frames_equal(first.trades, second.trades, ORDER_COLUMNS) and _frames_equal(
        first.final_state, second.final_state, PENDING_ORDER_COLUMNS
    )


def _frames_equal(first: pd.DataFrame, second: pd.DataFrame, columns: Sequence[str]) -> bool:
    if len(first) != len(second):
        return False
    return all(
        np.array_equal(first[column].to_numpy(), second[column].to_numpy()) for column in columns
    ) and list(first.index) == list(second.index)


@dataclass(frozen=True)
class Merge:
    """``strategy_id`` places the orders ``kept_id`` places, and is the more complex (or less preferred)."""

    strategy_id: str
    kept_id: str
    trades: int
    conditions: int
    kept_conditions: int

    def reason(self, window: str) -> str:
        return (
            f"merged into {self.kept_id}: identical out-of-sample orders in {window} ({self.trades} "
            f"trade{'' if self.trades == 1 else 's'}); kept the simpler ({self.kept_conditions} conditions, "
            f"this one {self.conditions})"
        )


def identical_order_merges(
    backtests: Mapping[str, StrategyBacktest], conditions: Mapping[str, int], preference: Sequence[str]
) -> list[Merge]:
    """Which strategies to merge into which: ``preference`` lists every id of ``backtests``, most
    preferred first (it breaks ties between equally simple strategies)."""
    if set(preference) != set(backtests) or len(preference) != len(backtests):
        raise ValueError("preference must list every backtested strategy exactly once")
    rank = {strategy_id: index for index, strategy_id in enumerate(preference)}
    order = sorted(preference, key=lambda strategy_id: (conditions[strategy_id], rank[strategy_id]))
    keepers: list[str] = []
    merges: list[Merge] = []
    for strategy_id in order:
        backtest = backtests[strategy_id]
        if backtest.trades.empty:
            continue
        kept = next((k for k in keepers if same_orders(backtests[k], backtest)), None)
        if kept is None:
            keepers.append(strategy_id)
            continue
        merges.append(
            Merge(
                strategy_id=strategy_id,
                kept_id=kept,
                trades=len(backtest.trades),
                conditions=conditions[strategy_id],
                kept_conditions=conditions[kept],
            )
        )
    return merges
