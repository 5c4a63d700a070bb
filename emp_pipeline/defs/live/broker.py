"""The live broker resource: which broker the live job trades through (paper by default, or cTrader)."""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from dagster import ConfigurableResource, EnvVar, Failure
from sqlalchemy import Engine

from emp_pipeline.broker.ctrader_broker import CTraderBroker
from emp_pipeline.broker.ctrader_client import CTraderConfig
from emp_pipeline.broker.interface import Broker
from emp_pipeline.broker.paper import BarFrameOpens, PaperBroker
from emp_pipeline.defs.token.resources import CTraderTokenResource
from emp_pipeline.domain.bars import adjusted_ohlc
from emp_pipeline.domain.costs import Costs
from emp_pipeline.live.engine import BARS_DATASET, LiveInputError
from emp_pipeline.registry.engine import session_scope
from emp_pipeline.registry.models import BrokerKind
from emp_pipeline.registry.positions import get_or_create_account
from emp_pipeline.settings import Settings
from emp_pipeline.storage.parquet_frames import DatedFrameStore


class LiveBrokerResource(ConfigurableResource):
    """Which broker the live job trades through: `paper` (default, fills at the next bar's open from the bar
    store) or `ctrader` (Open API; the OAuth token comes from the `ctrader_token` resource's Redis store)."""

    kind: str = "paper"
    account_name: str = "paper"
    currency: str = "USD"
    initial_cash: float = 100_000.0
    fee_bps: float = 1.0
    slippage_bps: float = 1.0
    ctrader_url: str = "wss://demo.ctraderapi.com:5036"
    ctrader_account_id: int = 0
    ctrader_client_id: str = ""
    ctrader_client_secret: str = ""
    ctrader_symbol_map: dict[str, str] = {}  # our symbol -> the broker's name, where they differ
    ctrader_token: CTraderTokenResource | None = None

    @contextmanager
    def open(
        self, engine: Engine, data_dir: str, as_of: dt.datetime | None = None
    ) -> Iterator[tuple[Broker, int]]:
        """(broker, registry account id) for one run; the broker is closed afterwards.

        With ``as_of`` the paper exchange knows only the bars up to that day, so a replayed tick cannot fill
        or stop out on a later bar."""
        if self.kind == BrokerKind.PAPER.value:
            end = pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1) if as_of else None
            bars = DatedFrameStore(data_dir, BARS_DATASET).read_window(end=end)
            if bars.empty or "open" not in bars.columns:
                raise LiveInputError(
                    f"no stored market_bars under {data_dir}: materialise market_bars, features and regimes "
                    "before the live job runs"
                )
            # Adjusted prices, as the backtest fills and checks stops (market_arrays uses the same scale).
            broker = PaperBroker(
                engine,
                BarFrameOpens(adjusted_ohlc(bars)),
                costs=Costs(fee_bps=self.fee_bps, slippage_bps=self.slippage_bps),
                account_name=self.account_name,
                currency=self.currency,
                initial_cash=self.initial_cash,
            )
            yield broker, broker.account_id
            return
        if as_of is not None:
            raise Failure(
                "as_of_date replays stored history and works with the paper broker only, not cTrader"
            )
        if self.kind != BrokerKind.CTRADER.value:
            raise Failure(f"live broker kind {self.kind!r} is neither paper nor ctrader: set EMP_BROKER")
        if self.ctrader_token is None:
            raise Failure(
                "the ctrader live broker needs the ctrader_token resource (CTRADER_CLIENT_ID/SECRET)"
            )
        config = CTraderConfig(
            url=self.ctrader_url,
            client_id=self.ctrader_client_id,
            client_secret=self.ctrader_client_secret,
            account_id=self.ctrader_account_id,
        )
        with session_scope(engine) as session:
            account = get_or_create_account(
                session,
                broker=BrokerKind.CTRADER.value,
                name=str(self.ctrader_account_id),
                currency=self.currency,
                initial_cash=self.initial_cash,
            )
        with CTraderBroker(
            config, self.ctrader_token.manager(), symbol_map=self.ctrader_symbol_map
        ) as broker:
            yield broker, account.id


def live_broker_resource(
    settings: Settings, ctrader_token: CTraderTokenResource | None = None
) -> LiveBrokerResource:
    """The broker resource the environment asks for (EMP_BROKER); cTrader secrets stay EnvVar references."""
    costs = settings.research.costs
    traded_like_measured = {
        "initial_cash": costs.capital,
        "fee_bps": costs.fee_bps,
        "slippage_bps": costs.slippage_bps,
    }
    if settings.live.broker != BrokerKind.CTRADER.value:
        return LiveBrokerResource(kind=BrokerKind.PAPER.value, **traded_like_measured)
    return LiveBrokerResource(
        kind=BrokerKind.CTRADER.value,
        **traded_like_measured,
        account_name=str(settings.live.ctrader_account_id),
        ctrader_url=settings.live.ctrader_api_url,
        ctrader_account_id=settings.live.ctrader_account_id,
        ctrader_client_id=EnvVar("CTRADER_CLIENT_ID"),
        ctrader_client_secret=EnvVar("CTRADER_CLIENT_SECRET"),
        ctrader_symbol_map=dict(settings.data.ctrader_symbol_map),  # orders name what the bars were read as
        ctrader_token=ctrader_token,
    )
