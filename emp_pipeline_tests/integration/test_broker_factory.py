"""broker.factory.open_broker: the broker a live run trades through, from plain configuration."""

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from emp_pipeline.broker.factory import BrokerSetupError, BrokerSpec, open_broker
from emp_pipeline.broker.paper import PaperBroker
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.synthetic import generate_market
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.registry.positions import get_account
from emp_pipeline.storage.datasets import MARKET_BARS


@pytest.fixture
def engine(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    upgrade_database(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def test_the_paper_broker_opens_on_the_stored_bars_with_its_account(tmp_path: Path, engine) -> None:
    bars = generate_market(n_instruments=1, n_bars=30, seed=3).bars
    MARKET_BARS.store(tmp_path).write_window(
        bars, bars["date"].min(), bars["date"].max() + pd.Timedelta(days=1)
    )
    spec = BrokerSpec(initial_cash=50_000.0, costs=Costs(fee_bps=2.0, slippage_bps=0.5))

    with open_broker(spec, engine, tmp_path) as (broker, account_id):
        assert isinstance(broker, PaperBroker) and broker.costs == spec.costs
    with session_scope(engine) as session:
        account = get_account(session, account_id)
    assert (account.broker, account.name, account.initial_cash) == ("paper", "paper", 50_000.0)


@pytest.mark.parametrize(
    ("spec", "as_of", "message"),
    [
        (BrokerSpec(), None, "no stored market_bars under"),
        (BrokerSpec(kind="ctrader"), dt.datetime(2013, 2, 1, tzinfo=dt.UTC), "paper broker only"),
        (BrokerSpec(kind="ib"), None, "live broker kind 'ib' is neither paper nor ctrader: set EMP_BROKER"),
        (BrokerSpec(kind="ctrader"), None, "needs the ctrader_token resource"),
    ],
)
def test_a_broker_that_cannot_open_says_why(tmp_path: Path, engine, spec, as_of, message) -> None:
    with pytest.raises(BrokerSetupError, match=message), open_broker(spec, engine, tmp_path, as_of):
        pass


def test_a_ctrader_connection_without_its_app_credentials_is_refused(tmp_path: Path, engine) -> None:
    spec = BrokerSpec(kind="ctrader", ctrader_account_id=42)
    with (
        pytest.raises(BrokerSetupError, match="client_id and client_secret are required"),
        open_broker(spec, engine, tmp_path, tokens=lambda: None),
    ):
        pass
