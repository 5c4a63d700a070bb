"""Honest headlines: a Sharpe ratio is only printed when enough trades stand behind it.

A Sharpe of a month with one lucky trade (or with none: a flat curve) describes that trade, not a strategy.
Wherever a study's result is summarised (the walk-forward report, `emp strategies`), a metric measured on
fewer trades than the stated minimum is reported as "not meaningful" with its trade count, and periods in
which the pick never traded are named.
"""

from __future__ import annotations

from collections.abc import Mapping

# The default minimum: fewer round trips than this and the Sharpe is the noise of a handful of trades.
MIN_MEANINGFUL_TRADES = 5


def not_meaningful_reason(trades: float | None, minimum: int) -> str | None:
    """None when ``trades`` (a count; None = unknown) reaches ``minimum``, else what to print instead."""
    if minimum < 0:
        raise ValueError(f"the minimum trade count must be >= 0, got {minimum}")
    if trades is None:
        return "not meaningful: trade count unknown"
    count = int(trades)
    if count >= minimum:
        return None
    return f"not meaningful: {count} trade{'' if count == 1 else 's'} < {minimum}"


def periods_without_trades(trades_by_period: Mapping[str, float | None]) -> list[str]:
    """The periods (sorted) whose pick made no trade; an unknown count is not taken for zero."""
    return sorted(period for period, trades in trades_by_period.items() if trades is not None and trades == 0)
