"""The HTTP endpoint Prometheus scrapes: `/metrics` served from a private registry holding the collector."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import TextIO
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from emp_pipeline.monitoring.collector import DEFAULT_TIMEOUT_S, EmpCollector
from emp_pipeline.settings import Settings

LOGGER = logging.getLogger(__name__)
DEFAULT_PORT = 9464


@dataclass
class MetricsServer:
    """A running exporter; `stop()` closes the socket and the collector's connections."""

    host: str
    port: int
    collector: EmpCollector
    _httpd: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self.collector.close()


def start_metrics_server(
    settings: Settings,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> MetricsServer:
    """Serve in a background thread (port 0 picks a free port; the chosen one is on the result)."""
    collector = EmpCollector(settings, timeout_s=timeout_s)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(host=host, port=httpd.server_port, collector=collector, _httpd=httpd, _thread=thread)


def serve_metrics(
    settings: Settings,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """`emp metrics serve`: serve until SIGTERM/SIGINT (or `stop` is set), then shut down cleanly."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():

        def _request_stop(signum: int, _frame: FrameType | None) -> None:
            LOGGER.info("metrics exporter stopping on signal %s", signum)
            stop.set()

        signal.signal(signal.SIGTERM, _request_stop)
        signal.signal(signal.SIGINT, _request_stop)
    server = start_metrics_server(settings, port=port, host=host, timeout_s=timeout_s)
    if out is not None:
        out.write(f"serving metrics on {server.url}\n")
        out.flush()
    try:
        stop.wait()
    finally:
        server.stop()
    return 0
