"""Many callers inside the margin at once: exactly one refresh, and every caller gets the new token.

The refresh token is single-use, so a second refresh with the same token would be refused by the server:
the Redis lock plus the re-read after taking it are what this guards, across threads and processes.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from emp_pipeline.auth.token_manager import CTraderTokenManager
from emp_pipeline_tests.fakes.ctrader_token_server import EXPIRES_IN_S, FakeCTraderTokenServer
from emp_pipeline_tests.integration.token_fixtures import make_manager

pytestmark = pytest.mark.redis


@pytest.fixture
def token_server(token_server: FakeCTraderTokenServer) -> FakeCTraderTokenServer:
    """The shared server, slowed so the one refresh stays in flight while the others pile up on the lock."""
    token_server.set_delay(0.2)
    return token_server


def manager_for(base_url: str, key_prefix: str) -> CTraderTokenManager:
    return make_manager(base_url, key_prefix, attempts=2, timeout_s=5.0)


def authorize_expiring_soon(base_url: str, key_prefix: str, server: FakeCTraderTokenServer) -> str:
    server.state.expires_in = 600
    manager_for(base_url, key_prefix).authorize_with_code(server.issue_code(), "http://127.0.0.1/cb")
    server.state.expires_in = EXPIRES_IN_S
    return server.state.issued[-1][0]


def ask_at_once(base_url: str, key_prefix: str, threads: int, ready: Callable[[], None]) -> list[str]:
    """`threads` threads, each with its own manager (own Redis connection), released together."""
    managers = [manager_for(base_url, key_prefix) for _ in range(threads)]
    ready()
    barrier = threading.Barrier(threads)

    def ask(manager: CTraderTokenManager) -> str:
        barrier.wait(timeout=30)
        return manager.get_access_token()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(ask, managers))


def ask_in_process(base_url: str, key_prefix: str, threads: int, processes_ready: Any, results: Any) -> None:
    """Child-process entry: wait for the sibling process, then ask from `threads` threads at once."""
    tokens = ask_at_once(base_url, key_prefix, threads, lambda: processes_ready.wait(timeout=60))
    results.put(tokens)


def test_twenty_threads_inside_the_margin_cause_one_refresh(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    old_access = authorize_expiring_soon(token_server.base_url, key_prefix, token_server)

    tokens = ask_at_once(token_server.base_url, key_prefix, threads=20, ready=lambda: None)

    new_access = token_server.state.issued[-1][0]
    assert token_server.count("refreshes") == 1 and token_server.count("refused_refreshes") == 0
    assert new_access != old_access and tokens == [new_access] * 20


def test_two_processes_of_ten_threads_cause_one_refresh(
    token_server: FakeCTraderTokenServer, key_prefix: str
) -> None:
    old_access = authorize_expiring_soon(token_server.base_url, key_prefix, token_server)
    context = multiprocessing.get_context("spawn")
    processes_ready, results = context.Barrier(2), context.Queue()
    children = [
        context.Process(
            target=ask_in_process, args=(token_server.base_url, key_prefix, 10, processes_ready, results)
        )
        for _ in range(2)
    ]
    for child in children:
        child.start()
    tokens = [token for _ in children for token in results.get(timeout=60)]
    for child in children:
        child.join(timeout=10)

    new_access = token_server.state.issued[-1][0]
    assert [child.exitcode for child in children] == [0, 0]
    assert token_server.count("refreshes") == 1 and token_server.count("refused_refreshes") == 0
    assert len(tokens) == 20 and new_access != old_access and set(tokens) == {new_access}
