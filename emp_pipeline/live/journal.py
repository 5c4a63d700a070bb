"""The live engine's own record per bar: the account's equity, every decision the risk checks made and the
risk limits each run traded under.

Equity at each bar's close gives the next day's starting equity (the daily loss limit's reference) without a
wall clock, so a replay sees the same numbers. Decisions, approved or not, are kept with their reason: a
rejected order leaves no trace in the broker or the orders table, and "why did it not trade?" must have an
answer, and so must "under which limits?" (a run may tighten the environment's). All are Parquet datasets
under the data directory, one per account. A re-run of a bar replaces that bar's equity, and adds its
decisions and limits (stamped with the run's time) to the ones already kept for the bar. Each write covers
its bar alone (`through`), whatever the timeframe: a re-run of an H1 bar leaves the later bars of its day as
they are.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import pandas as pd

from emp_pipeline.domain.risk import RiskLimits
from emp_pipeline.storage.datasets import LIVE_EQUITY, LIVE_RISK_DECISIONS, LIVE_RISK_LIMITS
from emp_pipeline.storage.parquet_frames import DatedFrameStore, through

DECISION_COLUMNS = (
    "date",
    "decided_at",
    "strategy_id",
    "symbol",
    "decision",
    "current",
    "target",
    "requested_quantity",
    "approved_quantity",
    "verdict",
    "reason",
    "client_order_id",
)
LIMIT_COLUMNS = ("date", "decided_at", *(field.name for field in fields(RiskLimits)))


def _add_to_bar(
    store: DatedFrameStore, bar_time: pd.Timestamp, decided_at: pd.Timestamp, frame: pd.DataFrame
) -> None:
    """Stamp ``frame`` with the bar and the run's time and add it to the rows already kept for the bar."""
    columns = list(frame.columns)
    frame = frame.assign(
        date=pd.Series([bar_time] * len(frame), dtype="datetime64[ns, UTC]"),
        decided_at=pd.Series([decided_at] * len(frame), dtype="datetime64[ns, UTC]"),
    )
    end = through(bar_time)
    earlier = store.read_window(bar_time, end)
    if not earlier.empty and "decided_at" in earlier.columns:
        frame = pd.concat([earlier[columns], frame[columns]], ignore_index=True)
    store.write_window(frame[columns], bar_time, end)


class LiveJournal:
    """Per-account equity, risk decisions and risk limits under `data_dir`."""

    def __init__(self, data_dir: Path | str, account_id: int) -> None:
        part = f"account_{account_id}"
        self._equity = LIVE_EQUITY.store(data_dir, part)
        self._decisions = LIVE_RISK_DECISIONS.store(data_dir, part)
        self._limits = LIVE_RISK_LIMITS.store(data_dir, part)

    def day_start_equity(self, bar_time: pd.Timestamp) -> float | None:
        """The equity recorded at the last bar before `bar_time`, or None on the first live day."""
        history = self._equity.read_window(end=bar_time)
        if history.empty or "equity" not in history.columns:
            return None
        return float(history.sort_values("date")["equity"].iloc[-1])

    def record_equity(self, bar_time: pd.Timestamp, equity: float, cash: float) -> None:
        frame = pd.DataFrame({"date": [bar_time], "equity": [float(equity)], "cash": [float(cash)]})
        self._equity.write_window(frame, bar_time, through(bar_time))

    def record_decisions(
        self, bar_time: pd.Timestamp, decided_at: pd.Timestamp, rows: list[dict[str, object]]
    ) -> None:
        _add_to_bar(
            self._decisions,
            bar_time,
            decided_at,
            pd.DataFrame.from_records(rows, columns=list(DECISION_COLUMNS)),
        )

    def record_limits(self, bar_time: pd.Timestamp, decided_at: pd.Timestamp, limits: RiskLimits) -> None:
        """The limits one run decided this bar under (the environment's ceilings or tighter)."""
        _add_to_bar(
            self._limits, bar_time, decided_at, pd.DataFrame([asdict(limits)], columns=list(LIMIT_COLUMNS))
        )

    def decisions(self) -> pd.DataFrame:
        return self._decisions.read_window()

    def limits(self) -> pd.DataFrame:
        return self._limits.read_window()
