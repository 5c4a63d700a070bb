"""The custom Prometheus collector: one scrape reads the registry, the bar store and the token store.

A component that fails (server down, table missing, unreadable file) yields `emp_up{component} 0` and no
other series of its own, and the scrape still answers, so Prometheus alerts on the component instead of
losing the whole target.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from emp_pipeline.broker.interface import RECORDED_STATUSES
from emp_pipeline.monitoring.readings import (
    LastBar,
    LastBarReader,
    RegistryReading,
    TokenReading,
    read_registry,
    read_tokens,
    redis_client,
    registry_engine,
)
from emp_pipeline.registry.models import StrategyStatus
from emp_pipeline.settings import Settings

LOGGER = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 2.0

Reading = TypeVar("Reading")


class EmpCollector(Collector):
    """Reads everything afresh on each `collect()`; holds only connection pools and the bar summary cache."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._engine = registry_engine(settings.database_url, timeout_s)
        self._redis = redis_client(settings.redis_url, timeout_s)
        self._bars = LastBarReader(settings.data_dir)
        self._client_ids = (settings.token.client_id,) if settings.token.client_id else ()

    def close(self) -> None:
        self._engine.dispose()
        self._redis.close()

    def _attempt(self, component: str, read: Callable[[], Reading]) -> tuple[Reading | None, float, bool]:
        started = time.perf_counter()
        try:
            value, up = read(), True
        except Exception as exc:  # any failure of a component is what emp_up reports
            LOGGER.warning("metrics: %s unavailable: %s: %s", component, type(exc).__name__, exc)
            value, up = None, False
        return value, time.perf_counter() - started, up

    def collect(self) -> Iterator[Metric]:
        registry, registry_s, registry_up = self._attempt("registry", lambda: read_registry(self._engine))
        bars, bars_s, bars_up = self._attempt("bar_store", self._bars.read)
        tokens, redis_s, redis_up = self._attempt(
            "redis", lambda: read_tokens(self._redis, self._client_ids, self.settings.token.key_prefix)
        )

        up = GaugeMetricFamily(
            "emp_up", "1 if the component answered this scrape, else 0", labels=["component"]
        )
        duration = GaugeMetricFamily(
            "emp_scrape_component_duration_seconds", "time spent reading the component", labels=["component"]
        )
        for component, ok, seconds in (
            ("registry", registry_up, registry_s),
            ("bar_store", bars_up, bars_s),
            ("redis", redis_up, redis_s),
        ):
            up.add_metric([component], 1.0 if ok else 0.0)
            duration.add_metric([component], seconds)
        yield up
        yield duration

        if bars is not None:
            yield from _bar_metrics(bars)
        if registry is not None:
            marks = {symbol: bar.close for symbol, bar in (bars or {}).items()}
            yield from _registry_metrics(registry, marks)
        if tokens is not None:
            yield from _token_metrics(tokens, self.clock())


def _bar_metrics(bars: dict[str, LastBar]) -> Iterator[Metric]:
    last = GaugeMetricFamily(
        "emp_market_last_bar_timestamp_seconds",
        "Unix time (UTC midnight) of the newest stored daily bar per symbol",
        labels=["symbol"],
    )
    for symbol in sorted(bars):
        last.add_metric([symbol], bars[symbol].date.timestamp())
    yield last


def _registry_metrics(reading: RegistryReading, marks: dict[str, float]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "emp_registry_instruments", "instruments in the registry", value=reading.instruments
    )
    strategies = GaugeMetricFamily("emp_registry_strategies", "strategies by status", labels=["status"])
    for status in StrategyStatus:
        strategies.add_metric([status.value], reading.strategies_by_status.get(status.value, 0))
    yield strategies
    runs = GaugeMetricFamily("emp_registry_evolution_runs", "evolution runs by status", labels=["status"])
    for status, count in sorted(reading.evolution_runs_by_status.items()):
        runs.add_metric([status], count)
    yield runs
    yield GaugeMetricFamily(
        "emp_active_champions",
        "strategies promoted to active (allowed to trade)",
        value=reading.active_champions,
    )
    orders = GaugeMetricFamily("emp_orders", "orders by status", labels=["status"])
    for status in RECORDED_STATUSES:
        orders.add_metric([status.value], reading.orders_by_status.get(status.value, 0))
    yield orders
    yield CounterMetricFamily("emp_fills", "broker fills recorded (never decreases)", value=reading.fills)
    yield GaugeMetricFamily(
        "emp_kill_switch_enabled",
        "1 while the kill switch stops live execution",
        value=int(reading.kill_switch),
    )
    equity = GaugeMetricFamily(
        "emp_paper_equity",
        "paper account cash plus positions at the newest stored close (cost if none)",
        labels=["account", "currency"],
    )
    cash = GaugeMetricFamily("emp_paper_cash", "paper account cash", labels=["account", "currency"])
    for account in reading.paper_accounts:
        equity.add_metric([account.name, account.currency], account.equity(marks))
        cash.add_metric([account.name, account.currency], account.cash)
    yield equity
    yield cash


def _token_metrics(tokens: list[TokenReading], now: float) -> Iterator[Metric]:
    stored = GaugeMetricFamily(
        "emp_token_stored", "1 if a token pair is stored for the client id", labels=["client_id"]
    )
    expiry = GaugeMetricFamily(
        "emp_token_seconds_to_expiry", "seconds until the stored access token expires", labels=["client_id"]
    )
    failures = GaugeMetricFamily(
        "emp_token_refresh_failures",
        "consecutive failed refreshes since the last success",
        labels=["client_id"],
    )
    reauth = GaugeMetricFamily(
        "emp_token_reauth_required", "1 when only a person can fix the token", labels=["client_id"]
    )
    last_refresh = GaugeMetricFamily(
        "emp_token_last_refresh_timestamp_seconds",
        "unix time of the last successful refresh",
        labels=["client_id"],
    )
    for token in tokens:
        labels = [token.client_id]
        stored.add_metric(labels, 0 if token.state is None else 1)
        if token.state is None:
            continue
        expiry.add_metric(labels, token.state.seconds_to_expiry(now))
        failures.add_metric(labels, token.state.consecutive_failures)
        reauth.add_metric(labels, int(token.reauth_required))
        if token.state.last_refresh_at is not None:
            last_refresh.add_metric(labels, token.state.last_refresh_at)
    yield from (stored, expiry, failures, reauth, last_refresh)
