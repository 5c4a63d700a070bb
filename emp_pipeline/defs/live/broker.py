"""The live broker resource: the configuration of the broker the live job trades through (broker.factory)."""

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from dagster import ConfigurableResource, EnvVar, Failure
from sqlalchemy import Engine

from emp_pipeline.broker.factory import BrokerSetupError, BrokerSpec, open_broker
from emp_pipeline.broker.interface import Broker, BrokerKind
from emp_pipeline.defs.token.resources import CTraderTokenResource
from emp_pipeline.domain.costs import DEFAULT_CAPITAL, DEFAULT_FEE_BPS, DEFAULT_SLIPPAGE_BPS, Costs
from emp_pipeline.settings import Settings


class LiveBrokerResource(ConfigurableResource):
    """Which broker the live job trades through: `paper` (default, fills at the next bar's open from the bar
    store) or `ctrader` (Open API; the OAuth token comes from the `ctrader_token` resource's Redis store).

    `fee_bps` and `slippage_bps` are what the paper exchange charges its fills (the simulated venue, like
    cTrader's own charges); each strategy's decisions fold the costs it was measured with, from the registry.
    `initial_cash` is the account's starting cash (EMP_CAPITAL)."""

    kind: str = "paper"
    account_name: str = "paper"
    currency: str = "USD"
    initial_cash: float = DEFAULT_CAPITAL
    fee_bps: float = DEFAULT_FEE_BPS
    slippage_bps: float = DEFAULT_SLIPPAGE_BPS
    ctrader_url: str = "wss://demo.ctraderapi.com:5036"
    ctrader_account_id: int = 0
    ctrader_client_id: str = ""
    ctrader_client_secret: str = ""
    ctrader_symbol_map: dict[str, str] = {}  # our symbol -> the broker's name, where they differ
    ctrader_token: CTraderTokenResource | None = None

    def spec(self) -> BrokerSpec:
        return BrokerSpec(
            kind=self.kind,
            account_name=self.account_name,
            currency=self.currency,
            initial_cash=self.initial_cash,
            costs=Costs(fee_bps=self.fee_bps, slippage_bps=self.slippage_bps),
            ctrader_url=self.ctrader_url,
            ctrader_account_id=self.ctrader_account_id,
            ctrader_client_id=self.ctrader_client_id,
            ctrader_client_secret=self.ctrader_client_secret,
            ctrader_symbol_map=self.ctrader_symbol_map,
        )

    @contextmanager
    def open(
        self, engine: Engine, data_dir: str, as_of: dt.datetime | None = None
    ) -> Iterator[tuple[Broker, int]]:
        """(broker, registry account id) for one run (broker.factory.open_broker); a broker that cannot be
        opened fails the run at once, since a retry of the same configuration cannot help."""
        tokens = self.ctrader_token.manager if self.ctrader_token is not None else None
        with ExitStack() as stack:
            try:
                opened = stack.enter_context(open_broker(self.spec(), engine, data_dir, as_of, tokens))
            except BrokerSetupError as error:
                raise Failure(description=str(error), allow_retries=False) from error
            yield opened


def live_broker_resource(
    settings: Settings, ctrader_token: CTraderTokenResource | None = None
) -> LiveBrokerResource:
    """The broker resource the environment asks for (EMP_BROKER); cTrader secrets stay EnvVar references."""
    research = settings.research
    # The capital and the paper venue's charges; each strategy's decisions use its own stored costs.
    account_and_venue = {
        "initial_cash": research.capital,
        "fee_bps": research.costs.fee_bps,
        "slippage_bps": research.costs.slippage_bps,
    }
    if settings.live.broker != BrokerKind.CTRADER.value:
        return LiveBrokerResource(kind=BrokerKind.PAPER.value, **account_and_venue)
    return LiveBrokerResource(
        kind=BrokerKind.CTRADER.value,
        **account_and_venue,
        account_name=str(settings.live.ctrader_account_id),
        ctrader_url=settings.live.ctrader_api_url,
        ctrader_account_id=settings.live.ctrader_account_id,
        ctrader_client_id=EnvVar("CTRADER_CLIENT_ID"),
        ctrader_client_secret=EnvVar("CTRADER_CLIENT_SECRET"),
        ctrader_symbol_map=dict(settings.data.ctrader_symbol_map),  # orders name what the bars were read as
        ctrader_token=ctrader_token,
    )
