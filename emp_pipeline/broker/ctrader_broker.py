"""The cTrader client behind the synchronous Broker interface, for Dagster ops and the CLI.

The asyncio client lives on its own event loop in a daemon thread for the broker's lifetime, so one connection
(and its heartbeats) serves many calls, instead of a connect/authorise round per call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from emp_pipeline.broker.ctrader_client import CTraderClient, CTraderClientStats, CTraderConfig
from emp_pipeline.broker.interface import (
    AccessTokenProvider,
    BrokerConnectionError,
    OrderRequest,
    OrderResult,
    Position,
    ReconcileReport,
)

T = TypeVar("T")


class CTraderBroker:
    """Broker over the cTrader Open API. `symbol_map` maps our instrument symbols to the broker's names."""

    def __init__(
        self,
        config: CTraderConfig,
        token_provider: AccessTokenProvider,
        *,
        symbol_map: Mapping[str, str] | None = None,
        call_timeout_s: float = 300.0,
    ) -> None:
        self._to_broker = dict(symbol_map or {})
        self._from_broker = {broker: ours for ours, broker in self._to_broker.items()}
        self._call_timeout_s = call_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ctrader-broker", daemon=True)
        self._thread.start()
        self._client = CTraderClient(config, token_provider)

    @property
    def stats(self) -> CTraderClientStats:
        return self._client.stats

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coroutine.close()
            raise BrokerConnectionError("this CTraderBroker is closed; create a new one")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(self._call_timeout_s)
        except TimeoutError as exc:
            future.cancel()
            raise BrokerConnectionError(
                f"cTrader call did not finish within {self._call_timeout_s} s; reconcile before resubmitting"
            ) from exc

    def _ours(self, symbol: str) -> str:
        return self._from_broker.get(symbol, symbol)

    def _translate(self, result: OrderResult) -> OrderResult:
        fills = tuple(replace(fill, symbol=self._ours(fill.symbol)) for fill in result.fills)
        return replace(result, fills=fills)

    def connect(self) -> None:
        """Optional: connect and authorise now rather than on the first call."""
        self._run(self._client.connect())

    def submit_order(self, request: OrderRequest) -> OrderResult:
        broker_request = replace(request, symbol=self._to_broker.get(request.symbol, request.symbol))
        return self._translate(self._run(self._client.submit_order(broker_request)))

    def order_status(self, client_order_id: str) -> OrderResult:
        return self._translate(self._run(self._client.order_status(client_order_id)))

    def positions(self) -> tuple[Position, ...]:
        return tuple(replace(p, symbol=self._ours(p.symbol)) for p in self._run(self._client.positions()))

    def reconcile(self, client_order_ids: Sequence[str] = ()) -> ReconcileReport:
        report = self._run(self._client.reconcile(client_order_ids))
        return ReconcileReport(
            tuple(replace(p, symbol=self._ours(p.symbol)) for p in report.positions),
            {coid: self._translate(result) for coid, result in report.orders.items()},
        )

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> CTraderBroker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
