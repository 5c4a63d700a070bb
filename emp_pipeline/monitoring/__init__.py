"""Prometheus metrics for the production deployment: what an operator needs to see before it hurts.

`emp metrics serve` runs `serve_metrics`; everything is read at scrape time, with short timeouts, and a
component that cannot be read shows as `emp_up{component=...} 0` instead of taking the exporter down.
"""

from emp_pipeline.monitoring.collector import EmpCollector
from emp_pipeline.monitoring.server import MetricsServer, serve_metrics, start_metrics_server

__all__ = ["EmpCollector", "MetricsServer", "serve_metrics", "start_metrics_server"]
