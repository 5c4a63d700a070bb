"""The broker a live run trades through, built from plain configuration: no Dagster here.

`open_broker` gives (broker, registry account id) for one run and closes the broker afterwards. The paper
broker fills at the next stored bar's open, on the adjusted price scale the backtest uses; the cTrader broker
trades through the Open API with the OAuth token of the given provider. The Dagster resource
(`defs/live/broker.py`) only carries the configuration and turns a `BrokerSetupError` into a run failure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from emp_pipeline.broker.ctrader_broker import CTraderBroker
from emp_pipeline.broker.ctrader_client import CTraderConfig, CTraderConfigError
from emp_pipeline.broker.interface import AccessTokenProvider, Broker, BrokerError, BrokerKind
from emp_pipeline.broker.paper import BarFrameOpens, PaperBroker
from emp_pipeline.domain.bars import adjusted_ohlc
from emp_pipeline.domain.costs import DEFAULT_CAPITAL, Costs
from emp_pipeline.domain.financing import bar_spreads
from emp_pipeline.registry.engine import session_scope
from emp_pipeline.registry.instruments import load_instruments
from emp_pipeline.registry.positions import get_or_create_account
from emp_pipeline.storage.datasets import MARKET_BARS
from emp_pipeline.storage.parquet_frames import through


class BrokerSetupError(BrokerError, ValueError):
    """The broker cannot be opened as configured or on what is stored; the message says what to do."""


@dataclass(frozen=True)
class BrokerSpec:
    """Which broker, which account, and what its fills cost; the ctrader_* fields serve kind "ctrader"."""

    kind: str = BrokerKind.PAPER.value
    account_name: str = "paper"
    currency: str = "USD"
    initial_cash: float = DEFAULT_CAPITAL
    costs: Costs = field(default_factory=Costs)
    ctrader_url: str = "wss://demo.ctraderapi.com:5036"
    ctrader_account_id: int = 0
    ctrader_client_id: str = ""
    ctrader_client_secret: str = field(default="", repr=False)
    ctrader_symbol_map: Mapping[str, str] = field(default_factory=dict)  # our symbol -> the broker's

    def ctrader_config(self) -> CTraderConfig:
        try:
            return CTraderConfig(
                url=self.ctrader_url,
                client_id=self.ctrader_client_id,
                client_secret=self.ctrader_client_secret,
                account_id=self.ctrader_account_id,
            )
        except CTraderConfigError as error:
            raise BrokerSetupError(str(error)) from None


@contextmanager
def open_broker(
    spec: BrokerSpec,
    engine: Engine,
    lake_dir: Path | str,
    as_of: dt.datetime | None = None,
    tokens: Callable[[], AccessTokenProvider] | None = None,
) -> Iterator[tuple[Broker, int]]:
    """(broker, registry account id) for one run; the broker is closed afterwards.

    With ``as_of`` the paper exchange knows only the bars up to that bar, so a replayed tick cannot fill or
    stop out on a later bar; `tokens` gives the cTrader broker its access-token provider when it is opened.
    """
    if spec.kind == BrokerKind.PAPER.value:
        yield _paper(spec, engine, lake_dir, as_of)
        return
    if as_of is not None:
        raise BrokerSetupError(
            "as_of_date replays stored history and works with the paper broker only, not cTrader"
        )
    if spec.kind != BrokerKind.CTRADER.value:
        raise BrokerSetupError(f"live broker kind {spec.kind!r} is neither paper nor ctrader: set EMP_BROKER")
    if tokens is None:
        raise BrokerSetupError(
            "the ctrader live broker needs the ctrader_token resource (CTRADER_CLIENT_ID/SECRET)"
        )
    config = spec.ctrader_config()
    with session_scope(engine) as session:
        account = get_or_create_account(
            session,
            broker=BrokerKind.CTRADER.value,
            name=str(config.account_id),
            currency=spec.currency,
            initial_cash=spec.initial_cash,
        )
    with CTraderBroker(config, tokens(), symbol_map=spec.ctrader_symbol_map) as broker:
        yield broker, account.id


def _paper(
    spec: BrokerSpec, engine: Engine, lake_dir: Path | str, as_of: dt.datetime | None
) -> tuple[PaperBroker, int]:
    end = through(as_of) if as_of else None
    bars = MARKET_BARS.read(lake_dir, end=end)
    if bars.empty or "open" not in bars.columns:
        raise BrokerSetupError(
            f"no stored {MARKET_BARS.name} under {lake_dir}: materialise {MARKET_BARS.name}, features and "
            "regimes before the live job runs"
        )
    with session_scope(engine) as session:
        instruments = {meta.symbol: meta for meta in load_instruments(session)}
    # Adjusted prices with each bar's spread, as the backtest fills and checks stops (market_arrays uses the
    # same scale and the same spreads).
    broker = PaperBroker(
        engine,
        BarFrameOpens(adjusted_ohlc(bars.assign(spread=bar_spreads(bars, instruments)))),
        costs=spec.costs,
        account_name=spec.account_name,
        currency=spec.currency,
        initial_cash=spec.initial_cash,
        instruments=instruments,
    )
    return broker, broker.account_id
