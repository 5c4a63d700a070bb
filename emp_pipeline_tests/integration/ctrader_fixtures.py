"""What the tests against the local cTrader protocol server share: the account and a client config with
timings shrunk so a whole session (reconnects included) runs in milliseconds."""

from __future__ import annotations

from dataclasses import replace

from emp_pipeline.broker.ctrader_client import CTraderConfig
from emp_pipeline_tests.fakes.ctrader_server import FakeCTraderServer

ACCOUNT = 4242


def fast_config(server: FakeCTraderServer, **overrides: object) -> CTraderConfig:
    config = CTraderConfig(
        url=server.url,
        client_id=server.client_id,
        client_secret=server.client_secret,
        account_id=ACCOUNT,
        allow_plaintext_loopback=True,
        heartbeat_interval_s=0.2,
        request_timeout_s=2.0,
        fill_timeout_s=2.0,
        reconnect_initial_delay_s=0.05,
        reconnect_max_delay_s=0.2,
        max_reconnect_attempts=3,
        reconcile_settle_s=0.0,
    )
    return replace(config, **overrides)
