"""broker.factory.open_broker: the broker a live run trades through, from plain configuration."""

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from emp_pipeline.broker.factory import BrokerSetupError, BrokerSpec, open_broker
from emp_pipeline.broker.interface import OrderRequest
from emp_pipeline.broker.paper import PaperBroker
from emp_pipeline.domain.costs import Costs
from emp_pipeline.domain.synthetic import generate_market
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.financing import financing_entries
from emp_pipeline.registry.instruments import store_instruments
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.registry.positions import get_account
from emp_pipeline.storage.datasets import MARKET_BARS
from emp_pipeline_tests.integration.test_paper_financing import EURUSD, UNITS, WEDNESDAY_HOURS, hourly_bars


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


def test_the_paper_broker_it_opens_books_the_stored_instruments_swaps(tmp_path: Path, engine) -> None:
    """The live job's broker knows the registry's swap terms: a long held over Wednesday's rollover (22:00
    UTC in winter) pays its three nights into the account's cash, which the risk checks read."""
    hours = WEDNESDAY_HOURS
    bars = hourly_bars(hours).assign(close=lambda frame: frame["open"], adj_close=lambda frame: frame["open"])
    MARKET_BARS.store(tmp_path).write_window(bars, hours[0], hours[-1] + pd.Timedelta(hours=1))
    with session_scope(engine) as session:
        store_instruments(session, [EURUSD], origin="test")
    spec = BrokerSpec(costs=Costs(fee_bps=0.0, slippage_bps=0.0))
    with open_broker(spec, engine, tmp_path, as_of=hours[0].to_pydatetime()) as (broker, _):
        broker.submit_order(OrderRequest("long", "EURUSD", "buy", UNITS))  # fills at the 20:00 open
    with open_broker(spec, engine, tmp_path, as_of=hours[2].to_pydatetime()) as (broker, account_id):
        broker.reconcile()
    with session_scope(engine) as session:
        before_rollover = get_account(session, account_id).cash
    with open_broker(spec, engine, tmp_path, as_of=hours[3].to_pydatetime()) as (broker, _):
        broker.reconcile()
    with session_scope(engine) as session:
        after_rollover = get_account(session, account_id).cash
        [entry] = financing_entries(session, account_id)
    assert (entry.rollover_at, entry.nights) == (hours[3], 3.0)
    assert after_rollover - before_rollover == pytest.approx(entry.amount, rel=1e-12)
    assert entry.amount == pytest.approx(-3 * 0.42 * EURUSD.pip_size * UNITS)
