"""The metrics exporter scraped over HTTP on loopback, against the real PostgreSQL and Redis."""

from __future__ import annotations

import datetime as dt
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg2
import pytest
import redis
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from emp_pipeline.auth.token_store import RedisTokenStore
from emp_pipeline.domain.costs import Costs
from emp_pipeline.monitoring import start_metrics_server
from emp_pipeline.registry.control import KILL_SWITCH, set_flag
from emp_pipeline.registry.engine import session_scope
from emp_pipeline.registry.models import Base, StrategyStatus
from emp_pipeline.registry.orders import create_order_if_absent, record_fill
from emp_pipeline.registry.positions import get_or_create_paper_account
from emp_pipeline.registry.records import NewStrategy
from emp_pipeline.registry.research import record_evolution_run, record_strategies, set_strategy_status
from emp_pipeline.settings import Settings
from emp_pipeline.storage.parquet_frames import DatedFrameStore

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
CLIENT_ID = "metrics-test-client"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def registry_url() -> Iterator[str]:
    name = f"emp_metrics_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def key_prefix() -> Iterator[str]:
    prefix = f"emp-metrics-test:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _settings(tmp_path: Path, database_url: str, redis_url: str, key_prefix: str) -> Settings:
    return Settings.from_env(
        {
            "EMP_HOME": str(tmp_path / "home"),
            "EMP_DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CTRADER_CLIENT_ID": CLIENT_ID,
            "EMP_TOKEN_KEY_PREFIX": key_prefix,
        }
    )


def _bars(symbol: str, days: list[str], closes: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "date": pd.to_datetime(days, utc=True),
            "symbol": symbol,
            "open": closes,
            "high": closes,
            "low": closes,
            "close": closes,
            "adj_close": closes,
            "volume": 1000.0,
        }
    )


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _seed_registry(url: str) -> None:
    """Two strategies (one promoted), a paper account long 10 ^GSPC bought at 100, and the kill switch on."""
    engine = create_engine(url)
    with session_scope(engine) as session:
        run_id = record_evolution_run(
            session,
            period="2020-01",
            train_start=dt.date(2018, 1, 1),
            train_end=dt.date(2019, 12, 31),
            embargo_days=5,
            seed=7,
            config={"population": 4},
            costs=Costs(),
        )
        ids = record_strategies(
            session,
            run_id,
            [
                NewStrategy(genome={"rule": n}, genome_version=1, generation=0, operator="seed", fitness=0.1)
                for n in (1, 2)
            ],
        )
        set_strategy_status(session, ids[0], StrategyStatus.ACTIVE, "passed the gates")
        account = get_or_create_paper_account(session, initial_cash=10_000.0)
        bar_time = dt.datetime(2020, 1, 2, tzinfo=dt.UTC)
        for client_order_id, quantity in (("buy-1", 10.0), ("buy-2", 5.0)):
            create_order_if_absent(
                session,
                client_order_id=client_order_id,
                account_id=account.id,
                symbol="^GSPC",
                side="buy",
                quantity=quantity,
                bar_time=bar_time,
                target_position=quantity,
                strategy_id=ids[0],
            )
        record_fill(
            session,
            client_order_id="buy-1",
            broker_fill_id="fill-1",
            price=100.0,
            quantity=10.0,
            filled_at=bar_time,
            fee=1.0,
        )
        set_flag(session, KILL_SWITCH, True, reason="test", updated_by="pytest")
    engine.dispose()


def test_scrape_reports_registry_bars_and_token(tmp_path, registry_url, key_prefix):
    settings = _settings(tmp_path, registry_url, "redis://127.0.0.1:6379/0", key_prefix)
    _seed_registry(registry_url)
    store = DatedFrameStore(settings.data_dir, "market_bars")
    store.write_window(
        _bars("^GSPC", ["2019-12-30", "2020-01-03"], [90.0, 120.0]), "2019-12-30", "2020-01-04"
    )
    store.write_window(_bars("GOOG", ["2019-12-31"], [50.0]), "2019-12-31", "2020-01-01")
    token_store = RedisTokenStore(
        redis.Redis(host="127.0.0.1", port=6379, decode_responses=True), CLIENT_ID, key_prefix=key_prefix
    )
    expires_at = time.time() + 20 * 3600
    token_store.write_pair("access-secret", "refresh-secret", expires_at=expires_at, refreshed_at=time.time())
    token_store.record_failure(
        "HTTP 503 from the token endpoint", reauth_required=False, keep_in_flight=False
    )

    server = start_metrics_server(settings, port=0)
    try:
        response_text = requests.get(server.url, timeout=10).text
        metrics = _scrape(server.url)
    finally:
        server.stop()

    assert "access-secret" not in response_text and "refresh-secret" not in response_text
    for component in ("registry", "bar_store", "redis"):
        assert metrics[("emp_up", (("component", component),))] == 1.0, component
    gspc, goog = (("symbol", "^GSPC"),), (("symbol", "GOOG"),)
    assert (
        metrics[("emp_market_last_bar_timestamp_seconds", gspc)]
        == pd.Timestamp("2020-01-03", tz="UTC").timestamp()
    )
    assert (
        metrics[("emp_market_last_bar_timestamp_seconds", goog)]
        == pd.Timestamp("2019-12-31", tz="UTC").timestamp()
    )
    assert metrics[("emp_registry_strategies", (("status", "active"),))] == 1
    assert metrics[("emp_registry_strategies", (("status", "candidate"),))] == 1
    assert metrics[("emp_active_champions", ())] == 1
    assert metrics[("emp_registry_evolution_runs", (("status", "running"),))] == 1
    assert metrics[("emp_orders", (("status", "filled"),))] == 1
    assert metrics[("emp_orders", (("status", "pending"),))] == 1
    assert metrics[("emp_fills_total", ())] == 1
    assert metrics[("emp_kill_switch_enabled", ())] == 1
    # 10 000 cash - 10 x 100 - 1 fee, plus 10 shares at the newest close (120).
    paper = (("account", "paper"), ("currency", "USD"))
    assert metrics[("emp_paper_cash", paper)] == pytest.approx(8_999.0)
    assert metrics[("emp_paper_equity", paper)] == pytest.approx(8_999.0 + 10 * 120.0)
    client = (("client_id", CLIENT_ID),)
    assert metrics[("emp_token_stored", client)] == 1
    assert metrics[("emp_token_seconds_to_expiry", client)] == pytest.approx(20 * 3600, abs=30)
    assert metrics[("emp_token_refresh_failures", client)] == 1
    assert metrics[("emp_token_reauth_required", client)] == 0
    # Every exporter metric an alert rule or the docs' queries rely on is one this scrape produced.
    exported = {name for name, _ in metrics}
    rules = yaml.safe_load((REPO_ROOT / "deploy" / "alerts.yml").read_text())
    expressions = " ".join(rule["expr"] for group in rules["groups"] for rule in group["rules"])
    assert set(re.findall(r"\bemp_[a-z_]+", expressions)) - {"emp_pipeline"} <= exported


def test_unreachable_servers_become_emp_up_zero_without_failing_the_scrape(tmp_path, key_prefix):
    dead_port = _closed_port()
    settings = _settings(
        tmp_path,
        f"postgresql+psycopg2://postgres@127.0.0.1:{dead_port}/nothing",
        f"redis://127.0.0.1:{dead_port}/0",
        key_prefix,
    )
    server = start_metrics_server(settings, port=0, timeout_s=1.0)
    try:
        started = time.monotonic()
        metrics = _scrape(server.url)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert metrics[("emp_up", (("component", "registry"),))] == 0.0
    assert metrics[("emp_up", (("component", "redis"),))] == 0.0
    assert metrics[("emp_up", (("component", "bar_store"),))] == 1.0  # an empty store is a healthy store
    assert not any(name.startswith(("emp_registry_", "emp_token_", "emp_orders")) for name, _ in metrics)
    assert elapsed < 8.0


def test_a_registry_without_tables_is_down_and_new_bars_show_on_the_next_scrape(tmp_path, key_prefix):
    """An un-migrated registry (SQLite file without tables) is reported down; the bar cache notices writes."""
    settings = _settings(
        tmp_path, f"sqlite:///{tmp_path / 'empty.sqlite'}", "redis://127.0.0.1:6379/0", key_prefix
    )
    store = DatedFrameStore(settings.data_dir, "market_bars")
    store.write_window(_bars("GOOG", ["2021-03-01"], [10.0]), "2021-03-01", "2021-03-02")
    server = start_metrics_server(settings, port=0)
    try:
        first = _scrape(server.url)
        store.write_window(_bars("GOOG", ["2021-03-02"], [11.0]), "2021-03-02", "2021-03-03")
        second = _scrape(server.url)
    finally:
        server.stop()
    goog = ("emp_market_last_bar_timestamp_seconds", (("symbol", "GOOG"),))
    assert first[("emp_up", (("component", "registry"),))] == 0.0
    assert first[("emp_up", (("component", "redis"),))] == 1.0
    assert first[("emp_token_stored", (("client_id", CLIENT_ID),))] == 0  # configured, never authorised
    assert first[goog] == pd.Timestamp("2021-03-01", tz="UTC").timestamp()
    assert second[goog] == pd.Timestamp("2021-03-02", tz="UTC").timestamp()


def test_emp_metrics_serve_answers_scrapes_and_stops_cleanly_on_sigterm(tmp_path, key_prefix):
    """The command docker-compose runs, in its own process: serves until SIGTERM, then exits 0."""
    port = _closed_port()
    script = (
        "import argparse, sys\n"
        "from emp_pipeline.monitoring.commands import add_metrics_commands\n"
        "from emp_pipeline.settings import Settings\n"
        "parser = argparse.ArgumentParser(prog='emp')\n"
        "add_metrics_commands(parser.add_subparsers(dest='command', required=True))\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.handler(args, Settings.from_env(), sys.stdout))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "EMP_HOME": str(tmp_path / "home"),
        "EMP_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.sqlite'}",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "EMP_TOKEN_KEY_PREFIX": key_prefix,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", script, "metrics", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        metrics = None
        while metrics is None and time.monotonic() < deadline:
            try:
                metrics = _scrape(f"http://127.0.0.1:{port}/metrics")
            except requests.ConnectionError:
                assert process.poll() is None, process.communicate()[0]
                time.sleep(0.3)
        assert metrics is not None, "the exporter never answered"
        assert metrics[("emp_up", (("component", "redis"),))] == 1.0
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert f"serving metrics on http://127.0.0.1:{port}/metrics" in output
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
