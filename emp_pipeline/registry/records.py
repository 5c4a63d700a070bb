"""Plain, immutable values that go into and come out of the registry's aggregate modules.

Callers (Dagster assets, the broker, the CLI) never hold ORM objects: sessions end, rows detach, and a frozen
dataclass says exactly which fields a caller may rely on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emp_pipeline.domain.costs import Costs


@dataclass(frozen=True)
class NewStrategy:
    """One strategy produced by an evolution run, as handed to `record_strategies`.

    `parent_ids` are registry ids (see `research.strategy_content_id`) of strategies recorded earlier or in
    the same batch; seeds and immigrants have none.
    """

    genome: Mapping[str, Any]
    genome_version: int
    generation: int
    operator: str
    fitness: float | None
    parent_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class StrategyRecord:
    """A stored strategy with the costs of its evolution run: what it was measured with and trades with."""

    id: str
    genome: dict[str, Any]
    genome_version: int
    evolution_run_id: str
    period: str
    generation: int
    operator: str
    fitness: float | None
    status: str
    created_at: dt.datetime
    costs: Costs


# The StrategyRecord fields that are columns of the strategies table (costs come from the run).
STRATEGY_COLUMNS = tuple(name for name in StrategyRecord.__dataclass_fields__ if name != "costs")


@dataclass(frozen=True)
class Ancestor:
    """One strategy in another's ancestry, with its own parents so callers can rebuild the lineage graph."""

    strategy_id: str
    evolution_run_id: str
    generation: int
    operator: str
    parent_ids: tuple[str, ...]


@dataclass(frozen=True)
class StatusChange:
    strategy_id: str
    from_status: str | None
    to_status: str
    at: dt.datetime
    reason: str


@dataclass(frozen=True)
class PerformanceEntry:
    """Metrics of one strategy over one window, as handed to `record_performance`.

    `metrics` holds every metric the backtest produced; the well-known ones (sharpe, max_drawdown, ...) are
    also stored as columns so gates and reports can filter on them in SQL.
    """

    strategy_id: str
    period: str
    kind: str
    start: dt.date
    end: dt.date
    metrics: Mapping[str, float | int | None]


@dataclass(frozen=True)
class PerformanceRecord:
    strategy_id: str
    period: str
    kind: str
    start: dt.date
    end: dt.date
    metrics: dict[str, float | int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class AccountRecord:
    id: int
    broker: str
    name: str
    currency: str
    initial_cash: float
    cash: float


@dataclass(frozen=True)
class OrderRecord:
    id: int
    client_order_id: str
    account_id: int
    strategy_id: str | None
    symbol: str
    side: str
    quantity: float
    order_type: str
    bar_time: dt.datetime
    target_position: float
    status: str
    broker_order_id: str | None
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class FillRecord:
    id: int
    order_id: int
    broker_fill_id: str
    price: float
    quantity: float
    fee: float
    filled_at: dt.datetime


@dataclass(frozen=True)
class RestingLevels:
    """A paper order's relative protective levels, the position they protect and the order's first fill.

    `position` is None until the order's fill armed the levels; `entry_price` and `entry_filled_at` are the
    order's first fill (None while it has none). A distance of None means no such level.
    """

    entry: OrderRecord
    stop_distance: float | None
    take_profit_distance: float | None
    position: float | None
    entry_price: float | None
    entry_filled_at: dt.datetime | None


@dataclass(frozen=True)
class PositionRecord:
    account_id: int
    symbol: str
    quantity: float
    avg_price: float
    realised_pnl: float
    updated_at: dt.datetime


@dataclass(frozen=True)
class FlagRecord:
    name: str
    enabled: bool
    reason: str
    updated_at: dt.datetime
    updated_by: str


@dataclass(frozen=True)
class FinancingEntry:
    """One rollover's swap booked to a paper account: `units` held across it, `amount` credited (charged:
    negative) in the account currency."""

    account_id: int
    symbol: str
    rollover_at: dt.datetime
    units: float
    nights: float
    amount: float
