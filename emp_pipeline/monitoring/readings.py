"""What the exporter reads at scrape time: registry counts, the newest bar per symbol, the token's health.

Each reader returns plain values and raises on failure; the collector decides how a failure is shown.
All reads are read-only and bounded by short timeouts, so a scrape never hangs on a dead server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import redis
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import InstrumentedAttribute

from emp_pipeline.auth.redis_connection import connect_redis
from emp_pipeline.auth.token_store import RedisTokenStore, TokenState, TokenStatus
from emp_pipeline.broker.interface import BrokerKind
from emp_pipeline.registry.control import KILL_SWITCH
from emp_pipeline.registry.engine import make_engine
from emp_pipeline.registry.models import (
    Account,
    ControlFlag,
    EvolutionRun,
    Fill,
    Instrument,
    Order,
    Position,
    Strategy,
    StrategyStatus,
)
from emp_pipeline.storage.datasets import MARKET_BARS


def registry_engine(url: str, timeout_s: float) -> Engine:
    """The registry engine, with PostgreSQL connect and statement timeouts added to the URL.

    libpq reads `connect_timeout` (whole seconds) and `options` from the URL; a URL that already sets
    them keeps its own values.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        extra = {
            "connect_timeout": str(max(1, round(timeout_s))),
            "options": f"-c statement_timeout={int(timeout_s * 1000)}",
        }
        parsed = parsed.update_query_dict({k: v for k, v in extra.items() if k not in parsed.query})
        url = parsed.render_as_string(hide_password=False)
    return make_engine(url)


@dataclass(frozen=True)
class PaperAccountReading:
    name: str
    currency: str
    cash: float
    positions: tuple[tuple[str, float, float], ...]  # (symbol, signed quantity, average price)

    def equity(self, marks: dict[str, float]) -> float:
        """Cash plus positions at the newest close; a symbol without a stored close is marked at cost."""
        return self.cash + sum(
            qty * marks.get(symbol, avg_price) for symbol, qty, avg_price in self.positions
        )


@dataclass(frozen=True)
class RegistryReading:
    instruments: int
    strategies_by_status: dict[str, int]
    evolution_runs_by_status: dict[str, int]
    orders_by_status: dict[str, int]
    fills: int
    kill_switch: bool
    paper_accounts: tuple[PaperAccountReading, ...] = field(default=())

    @property
    def active_champions(self) -> int:
        """Strategies that passed the out-of-sample gates and may trade (status `active`)."""
        return self.strategies_by_status.get(StrategyStatus.ACTIVE.value, 0)


def _counts_by(connection: Connection, column: InstrumentedAttribute[str]) -> dict[str, int]:
    rows = connection.execute(select(column, func.count()).group_by(column)).all()
    return {str(value): int(count) for value, count in rows}


def read_registry(engine: Engine) -> RegistryReading:
    """Counts and the paper accounts, in one read-only connection (raises if the registry is unreachable)."""
    with engine.connect() as connection:
        kill = connection.execute(
            select(ControlFlag.enabled).where(ControlFlag.name == KILL_SWITCH)
        ).scalar_one_or_none()
        accounts = connection.execute(
            select(Account.id, Account.name, Account.currency, Account.cash).where(
                Account.broker == BrokerKind.PAPER.value
            )
        ).all()
        positions = connection.execute(
            select(Position.account_id, Position.symbol, Position.quantity, Position.avg_price).where(
                Position.quantity != 0.0
            )
        ).all()
        reading = RegistryReading(
            instruments=int(connection.execute(select(func.count()).select_from(Instrument)).scalar_one()),
            strategies_by_status=_counts_by(connection, Strategy.status),
            evolution_runs_by_status=_counts_by(connection, EvolutionRun.status),
            orders_by_status=_counts_by(connection, Order.status),
            fills=int(connection.execute(select(func.count()).select_from(Fill)).scalar_one()),
            kill_switch=bool(kill),
            paper_accounts=tuple(
                PaperAccountReading(
                    name=name,
                    currency=currency,
                    cash=float(cash),
                    positions=tuple(
                        (symbol, float(qty), float(avg))
                        for acc, symbol, qty, avg in positions
                        if acc == account_id
                    ),
                )
                for account_id, name, currency, cash in accounts
            ),
        )
    return reading


@dataclass(frozen=True)
class LastBar:
    date: pd.Timestamp
    close: float


class LastBarReader:
    """The newest stored bar of every symbol, re-reading only the yearly Parquet files that changed.

    A scrape every 15 s must not re-read years of history: each year's summary is kept until the file's
    size or modification time changes (the store replaces files atomically, so either changes on a write).
    """

    def __init__(self, data_dir: Path) -> None:
        self.store = MARKET_BARS.store(data_dir)
        self._summaries: dict[int, tuple[tuple[int, int], dict[str, LastBar]]] = {}

    def _year_files(self) -> dict[int, Path]:
        if not self.store.directory.exists():
            return {}
        return {int(p.stem): p for p in self.store.directory.glob("*.parquet") if p.stem.isdigit()}

    def _summarise(self, year: int) -> dict[str, LastBar]:
        frame = self.store.read_window(f"{year}-01-01", f"{year + 1}-01-01")
        if frame.empty or "symbol" not in frame.columns:
            return {}
        newest = frame.sort_values(["symbol", "date"]).groupby("symbol").tail(1)
        return {
            str(row.symbol): LastBar(date=row.date, close=float(row.close))
            for row in newest.itertuples(index=False)
        }

    def read(self) -> dict[str, LastBar]:
        files = self._year_files()
        for year in set(self._summaries) - set(files):
            del self._summaries[year]
        latest: dict[str, LastBar] = {}
        for year in sorted(files):
            stat = files[year].stat()
            signature = (stat.st_mtime_ns, stat.st_size)
            cached = self._summaries.get(year)
            if cached is None or cached[0] != signature:
                cached = self._summaries[year] = (signature, self._summarise(year))
            latest.update(cached[1])  # later years overwrite earlier ones
        return latest


@dataclass(frozen=True)
class TokenReading:
    client_id: str
    state: TokenState | None  # None: nothing stored for this client (never authorised)

    @property
    def reauth_required(self) -> bool:
        return self.state is not None and self.state.status is TokenStatus.REAUTH_REQUIRED


def redis_client(url: str, timeout_s: float) -> redis.Redis:
    return connect_redis(url, socket_timeout_s=timeout_s)


def read_tokens(client: redis.Redis, client_ids: tuple[str, ...], key_prefix: str) -> list[TokenReading]:
    """PING, then the non-secret token fields of each client (HMGET only: never a write, never a token)."""
    client.ping()
    return [
        TokenReading(client_id, RedisTokenStore(client, client_id, key_prefix=key_prefix).read_state())
        for client_id in client_ids
    ]
