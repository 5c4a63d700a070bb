"""`emp metrics serve`: the exporter docker-compose runs next to Prometheus."""

from __future__ import annotations

import argparse
import logging
from typing import TextIO

from emp_pipeline.monitoring.collector import DEFAULT_TIMEOUT_S
from emp_pipeline.monitoring.server import DEFAULT_PORT, serve_metrics
from emp_pipeline.settings import Settings


def _cmd_metrics_serve(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve_metrics(settings, port=args.port, host=args.host, timeout_s=args.timeout, out=out)


def add_metrics_commands(commands: argparse._SubParsersAction) -> None:
    """Register `metrics serve` on the `emp` parser's sub-commands (handler(args, settings, out) -> int)."""
    metrics = commands.add_parser("metrics", help="Prometheus metrics").add_subparsers(
        dest="metrics_command", required=True
    )
    serve = metrics.add_parser(
        "serve", help="serve /metrics (token, bars, registry, orders, equity, health) until SIGTERM"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    serve.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds each of PostgreSQL and Redis may take per scrape before it counts as down",
    )
    serve.set_defaults(handler=_cmd_metrics_serve)
