"""How numbers read in the UI: one set of rules for every asset's metadata, table and plot axis, and the demo.

Dagster shows a float metadata value with all its digits (`0.0007239727601757728`) and a negative zero as
`-0`, and a percent axis with a fixed number of decimals labels small drawdown ticks "0%, -0%". So:
- ratios (Sharpe, PBO, p-values, fitness) are rounded to RATIO_DECIMALS and stay floats (the UI plots them);
- returns and drawdowns are fractions shown as percent text ("+1.25%", "-0.07%"), RETURN_DECIMALS places;
- counts are ints; a missing or non-finite value reads "n/a"; nothing ever reads as negative zero;
- markdown tables are cut to a page's width: long ids shortened, at most MAX_TABLE_COLUMNS per table, the
  rest in further tables that repeat the key columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

import pandas as pd
from dagster import MetadataValue
from matplotlib.ticker import Formatter

RATIO_DECIMALS = 2
RETURN_DECIMALS = 2
MONEY_DECIMALS = 2  # account currency: cents
SHORT_ID_CHARS = 8
MAX_TABLE_COLUMNS = 8
MISSING = "n/a"


def _finite(value: object) -> float | None:
    """The value as a float, or None when it is missing, not a number or infinite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def rounded(value: object, decimals: int = RATIO_DECIMALS) -> float | None:
    """value rounded to `decimals` places, without negative zero; None when not a finite number."""
    number = _finite(value)
    if number is None:
        return None
    return round(number, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0


def ratio_text(value: object, decimals: int = RATIO_DECIMALS) -> str:
    """A ratio (Sharpe, p-value, fitness) for a table or a sentence: "1.25", "-0.40", "n/a"."""
    number = rounded(value, decimals)
    return MISSING if number is None else f"{number:.{decimals}f}"


def percent_text(value: object, decimals: int = RETURN_DECIMALS, signed: bool = False) -> str:
    """A fraction as percent: 0.0125 -> "1.25%" ("+1.25%" when signed); a value that rounds to zero reads
    "0.00%" whatever its sign."""
    number = rounded(value, decimals + 2)
    if number is None:
        return MISSING
    text = f"{number:+.{decimals}%}" if signed and number != 0.0 else f"{number:.{decimals}%}"
    return text


def count_text(value: object) -> str:
    """A count with thousands separators, "n/a" when missing."""
    number = _finite(value)
    return MISSING if number is None else f"{int(number):,}"


def ratio_metadata(value: object, decimals: int = RATIO_DECIMALS) -> MetadataValue:
    """A ratio as float metadata (plottable in the UI), rounded; text "n/a" when not finite."""
    number = rounded(value, decimals)
    return MetadataValue.text(MISSING) if number is None else MetadataValue.float(number)


def percent_metadata(value: object, decimals: int = RETURN_DECIMALS) -> MetadataValue:
    """A return or drawdown as percent text metadata: "-3.21%"."""
    return MetadataValue.text(percent_text(value, decimals, signed=True))


def short_id(value: object, chars: int = SHORT_ID_CHARS) -> str:
    """The first `chars` characters of a long id (like a short git hash); short ids are left whole."""
    text = str(value)
    return text if len(text) <= chars + 1 else text[:chars]


def markdown_tables(
    frame: pd.DataFrame,
    keys: Sequence[str] = (),
    id_columns: Sequence[str] = (),
    max_columns: int = MAX_TABLE_COLUMNS,
) -> str:
    """`frame` as markdown that fits a page: every cell formatted by `metric_text` under its column's name,
    ids in `id_columns` shortened, and when there are more than `max_columns` columns, several tables, each
    repeating the `keys` columns, one after the other."""
    if frame.empty:
        return "none"
    missing = [column for column in (*keys, *id_columns) if column not in frame.columns]
    if missing:
        raise ValueError(f"markdown_tables: columns {missing} are not in the frame ({list(frame.columns)})")
    if len(keys) >= max_columns:
        raise ValueError(f"markdown_tables: {len(keys)} key columns leave no room in {max_columns} columns")
    shown = frame.astype(object).copy()
    for column in shown.columns:
        shorten = column in id_columns
        shown[column] = [
            short_id(value) if shorten else metric_text(str(column), value) for value in shown[column]
        ]
    rest = [column for column in shown.columns if column not in keys]
    width = max_columns - len(keys)
    chunks = [rest[start : start + width] for start in range(0, len(rest), width)] or [[]]
    return "\n\n".join(shown.loc[:, [*keys, *chunk]].to_markdown(index=False) for chunk in chunks)


class PercentAxisFormatter(Formatter):
    """Tick labels for an axis of fractions: as few decimals as keep the visible ticks apart, never "-0%"."""

    def __init__(self, max_decimals: int = 4) -> None:
        self.max_decimals = max_decimals
        self.decimals = 0

    def set_locs(self, locs: Sequence[float]) -> None:
        ticks = list(locs)
        self.decimals = next(
            (
                decimals
                for decimals in range(self.max_decimals + 1)
                if len({percent_text(tick, decimals) for tick in ticks}) == len(set(ticks))
            ),
            self.max_decimals,
        )

    def __call__(self, value: float, pos: int | None = None) -> str:
        return percent_text(value, self.decimals)


# Metrics that are fractions of capital or of time, shown as percent; by name, so every table agrees.
PERCENT_METRICS = frozenset(
    {"cagr", "annualised_volatility", "win_rate", "exposure", "turnover", "max_drawdown", "drawdown"}
)


def is_percent_metric(name: str) -> bool:
    """Returns (…_return, return), costs paid (…_cost, fractions of capital) and the fractions in
    PERCENT_METRICS read as percent."""
    return name in PERCENT_METRICS or name == "return" or name.endswith(("_return", "_cost"))


def metric_text(name: str, value: object) -> str:
    """One cell of a metrics table: percent, count or ratio by the metric's name and the value's type; text
    (an id, a value formatted already) is kept as it is."""
    if isinstance(value, str):
        return value
    if is_percent_metric(name):
        return percent_text(value)
    if isinstance(value, Integral) and not isinstance(value, bool):
        return count_text(value)
    if isinstance(value, bool):
        return str(value)
    return ratio_text(value)
