"""The registry schema: SQLAlchemy 2 typed models shared by SQLite (embedded) and PostgreSQL (production).

Only portable column types are used (JSON, timezone-aware timestamps, plain strings with CHECK constraints
for the enumerations the schema owns; the broker kind is checked in code, so a new broker needs no
migration) so the same models and the same Alembic migrations serve both databases. Every
constraint has a deterministic name (see NAMING_CONVENTION) so migrations can address it, including
SQLite batch rebuilds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from emp_pipeline.broker.interface import RECORDED_STATUSES, OrderSide, OrderStatus

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CLIENT_ORDER_ID_MAX_LENGTH = 50  # cTrader Open API limit for clientOrderId


class StrategyStatus(StrEnum):
    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"
    REJECTED = "rejected"


class StrategyOperator(StrEnum):
    """How the genetic algorithm produced a strategy."""

    SEED = "seed"
    CROSSOVER = "crossover"
    MUTATION = "mutation"
    ELITE = "elite"
    IMMIGRANT = "immigrant"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WindowKind(StrEnum):
    IN_SAMPLE = "in_sample"
    OUT_OF_SAMPLE = "out_of_sample"


def _one_of(column: str, values: Iterable[StrEnum], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{member.value}'" for member in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware timestamp that always comes back in UTC, on PostgreSQL and on SQLite.

    SQLite has no time zone support and SQLAlchemy drops tzinfo there, so values are converted to UTC before
    they are written and tagged as UTC when read. Naive datetimes are refused: their meaning is ambiguous.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value!r} given to the registry: pass a timezone-aware datetime"
            )
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: UtcDateTime(),
        dt.date: Date(),
        float: Double(),
        dict[str, Any]: JSON(),
    }


class Instrument(Base):
    """Reference data for one tradable symbol (mirrors domain.instruments.InstrumentMeta)."""

    __tablename__ = "instruments"

    symbol: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    asset_class: Mapped[str] = mapped_column(String(16))
    quote_currency: Mapped[str] = mapped_column(String(8))
    tick_size: Mapped[float]
    pip_position: Mapped[int] = mapped_column(Integer)
    lot_size: Mapped[float]
    min_volume: Mapped[float]
    step_volume: Mapped[float]
    calendar: Mapped[str] = mapped_column(String(32))
    # Execution terms (migration 0008; rows stored before it read as no swaps and no spread, what they had).
    swap_long: Mapped[float] = mapped_column(server_default="0")
    swap_short: Mapped[float] = mapped_column(server_default="0")
    swap_type: Mapped[str] = mapped_column(String(16), server_default="pips")
    swap_triple_weekday: Mapped[int] = mapped_column(Integer, server_default="2")  # Weekday: 0 = Monday
    spread_pips: Mapped[float] = mapped_column(server_default="0")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utc_now, onupdate=utc_now)


class InstrumentTermChange(Base):
    """One accepted change of one instrument term: old and new value, when, where from, why and by whom.

    Terms size orders and decide which days trade, so they never change silently (see
    `domain.instrument_changes`): a row here is written in the same transaction as the change itself.
    """

    __tablename__ = "instrument_term_changes"
    __table_args__ = (Index("ix_instrument_term_changes_symbol_changed_at", "symbol", "changed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    symbol: Mapped[str] = mapped_column(ForeignKey("instruments.symbol", ondelete="CASCADE"))
    term: Mapped[str] = mapped_column(String(64))
    old_value: Mapped[str] = mapped_column(Text)
    new_value: Mapped[str] = mapped_column(Text)
    changed_at: Mapped[dt.datetime] = mapped_column(default=utc_now)
    origin: Mapped[str] = mapped_column(Text)  # where the new terms came from (the universe file and digest)
    reason: Mapped[str] = mapped_column(Text)  # why the change was accepted, in the operator's words
    accepted_by: Mapped[str] = mapped_column(String(200))  # the run (or person) that accepted it


class EvolutionRun(Base):
    """One genetic-algorithm run for one walk-forward period."""

    __tablename__ = "evolution_runs"
    __table_args__ = (_one_of("status", RunStatus, "status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(32), index=True)
    train_start: Mapped[dt.date]
    train_end: Mapped[dt.date]
    embargo_days: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]]
    # `domain.costs.Costs.to_dict()`: what every fill of the run's backtests paid. Its strategies are
    # measured, gated and traded with these costs (migration 0007 filled it in for older runs).
    costs: Mapped[dict[str, Any]]
    started_at: Mapped[dt.datetime] = mapped_column(default=utc_now)
    finished_at: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING.value)


class Strategy(Base):
    """An evolved strategy; its id is a content hash of (genome, run) so re-materialising is idempotent."""

    __tablename__ = "strategies"
    __table_args__ = (
        _one_of("operator", StrategyOperator, "operator"),
        _one_of("status", StrategyStatus, "status"),
        Index("ix_strategies_status_period", "status", "period"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    genome: Mapped[dict[str, Any]]
    genome_version: Mapped[int] = mapped_column(Integer)
    evolution_run_id: Mapped[str] = mapped_column(
        ForeignKey("evolution_runs.id", ondelete="CASCADE"), index=True
    )
    period: Mapped[str] = mapped_column(String(32))
    generation: Mapped[int] = mapped_column(Integer)
    operator: Mapped[str] = mapped_column(String(16))
    fitness: Mapped[float | None]
    status: Mapped[str] = mapped_column(String(16), default=StrategyStatus.CANDIDATE.value)
    created_at: Mapped[dt.datetime] = mapped_column(default=utc_now)


class StrategyParent(Base):
    """Lineage edge child -> parent; an association table so ancestry is a recursive query."""

    __tablename__ = "strategy_parents"
    __table_args__ = (CheckConstraint("child_id <> parent_id", name="not_self"),)

    child_id: Mapped[str] = mapped_column(ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True)
    parent_id: Mapped[str] = mapped_column(
        ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class StrategyStatusChange(Base):
    """Audit trail of every status a strategy went through (from_status is NULL at creation)."""

    __tablename__ = "strategy_status_history"
    __table_args__ = (
        _one_of("to_status", StrategyStatus, "to_status"),
        Index("ix_strategy_status_history_strategy_id_at", "strategy_id", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    strategy_id: Mapped[str] = mapped_column(ForeignKey("strategies.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(default=utc_now)
    reason: Mapped[str] = mapped_column(Text, default="")


class Performance(Base):
    """Backtest metrics of one strategy over one window (in-sample training or out-of-sample period)."""

    __tablename__ = "performance"
    __table_args__ = (
        UniqueConstraint("strategy_id", "period", "kind"),
        _one_of("kind", WindowKind, "kind"),
        Index("ix_performance_period_kind", "period", "kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    strategy_id: Mapped[str] = mapped_column(ForeignKey("strategies.id", ondelete="CASCADE"))
    period: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    start: Mapped[dt.date]
    end: Mapped[dt.date]
    total_return: Mapped[float | None]
    cagr: Mapped[float | None]
    volatility: Mapped[float | None]
    sharpe: Mapped[float | None]
    sortino: Mapped[float | None]
    calmar: Mapped[float | None]
    max_drawdown: Mapped[float | None]
    max_drawdown_days: Mapped[int | None] = mapped_column(Integer)
    win_rate: Mapped[float | None]
    profit_factor: Mapped[float | None]
    trade_count: Mapped[int | None] = mapped_column(Integer)
    exposure: Mapped[float | None]
    turnover: Mapped[float | None]
    deflated_sharpe: Mapped[float | None]
    # The N the deflated Sharpe was computed with: distinct candidates the period's search evaluated.
    dsr_trials: Mapped[int | None] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]]
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utc_now, onupdate=utc_now)


class MarketRegime(Base):
    """The causal regime label of one symbol on one day, per classifier."""

    __tablename__ = "market_regimes"
    __table_args__ = (Index("ix_market_regimes_date", "date"),)

    symbol: Mapped[str] = mapped_column(String(64), primary_key=True)
    date: Mapped[dt.date] = mapped_column(primary_key=True)
    classifier: Mapped[str] = mapped_column(String(64), primary_key=True)
    regime: Mapped[str] = mapped_column(String(32))
    probabilities: Mapped[dict[str, Any]]
    warmup: Mapped[bool] = mapped_column(Boolean, default=False)


class Account(Base):
    """A trading account: the paper broker keeps its whole state here, cTrader accounts mirror the broker."""

    __tablename__ = "accounts"
    # `broker` is a broker.interface.BrokerKind value, checked in code: a new broker needs no migration.
    __table_args__ = (UniqueConstraint("broker", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    broker: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    currency: Mapped[str] = mapped_column(String(8))
    initial_cash: Mapped[float]
    cash: Mapped[float]
    created_at: Mapped[dt.datetime] = mapped_column(default=utc_now)


class Order(Base):
    """An order intent; client_order_id is unique so a retried run can never submit the same order twice."""

    __tablename__ = "orders"
    __table_args__ = (
        _one_of("side", OrderSide, "side"),
        _one_of("status", RECORDED_STATUSES, "status"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        Index("ix_orders_account_id_status", "account_id", "status"),
        Index("ix_orders_account_id_symbol", "account_id", "symbol"),  # a book's orders (paper broker)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_order_id: Mapped[str] = mapped_column(String(CLIENT_ORDER_ID_MAX_LENGTH), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    strategy_id: Mapped[str | None] = mapped_column(ForeignKey("strategies.id"), index=True)
    symbol: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[float]
    order_type: Mapped[str] = mapped_column(String(16))
    bar_time: Mapped[dt.datetime]
    target_position: Mapped[float]
    status: Mapped[str] = mapped_column(String(20), default=OrderStatus.PENDING.value)
    broker_order_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utc_now, onupdate=utc_now)


class Fill(Base):
    """An execution reported by the broker; broker_fill_id is unique so a replayed report is recorded once."""

    __tablename__ = "fills"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("price > 0", name="price_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    broker_fill_id: Mapped[str] = mapped_column(String(64), unique=True)
    price: Mapped[float]
    quantity: Mapped[float]
    fee: Mapped[float]
    filled_at: Mapped[dt.datetime]


class PaperProtectiveLevels(Base):
    """Relative stop loss and take profit of a paper order, resting at the paper exchange once it fills.

    The paper broker simulates the exchange, so the levels a cTrader order carries to the venue are kept
    here: distances from the entry's fill price (NULL: no such level). A row outlives the entry's fill until
    the book's next fill ends its protection, when the broker deletes it. `position` is the book's position
    the levels protect, written in the transaction that records the entry's fill (NULL before), so checking
    the levels on a bar does not sum the book's fills.
    """

    __tablename__ = "paper_protective_levels"

    client_order_id: Mapped[str] = mapped_column(
        String(CLIENT_ORDER_ID_MAX_LENGTH), ForeignKey("orders.client_order_id"), primary_key=True
    )
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    stop_distance: Mapped[float | None]
    take_profit_distance: Mapped[float | None]
    position: Mapped[float | None]


class PaperFinancing(Base):
    """One rollover's overnight swap booked to a paper account's net position in a symbol.

    `broker.paper_financing` decides what is owed. The key is (account, symbol, rollover time), so a retried
    or concurrent catch-up books each rollover once; `amount` (account currency, credited: positive) moved
    the account's cash in the same transaction. `units` is the net position held across the rollover,
    `nights` 3 on the instrument's triple weekday.
    """

    __tablename__ = "paper_financing"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(64), primary_key=True)
    rollover_at: Mapped[dt.datetime] = mapped_column(primary_key=True)
    units: Mapped[float]
    nights: Mapped[float]
    amount: Mapped[float]
    booked_at: Mapped[dt.datetime] = mapped_column(default=utc_now)


class Position(Base):
    """Net signed quantity per account and symbol, its average entry price and realised PnL net of fees."""

    __tablename__ = "positions"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(64), primary_key=True)
    quantity: Mapped[float]
    avg_price: Mapped[float]
    realised_pnl: Mapped[float]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utc_now, onupdate=utc_now)


class ControlFlag(Base):
    """Operational switches, e.g. the kill switch that stops live execution."""

    __tablename__ = "control_flags"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utc_now, onupdate=utc_now)
    updated_by: Mapped[str] = mapped_column(String(100), default="")
