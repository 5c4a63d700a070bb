"""The Dagster UI in a real browser: headless Debian Chromium driven by playwright, no browser download.

It reuses the production rehearsal's webserver after `market_bars` was materialized with its checks, opens
the asset graph and the asset's checks page as a person would, and saves screenshots under artifacts/ui/.
Then `make ui`'s wrapper on a home where a job ran in process, as `emp demo` runs them: the Overview timeline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from emp_pipeline.definitions import build_definitions
from emp_pipeline.demo import _run_job, demo_instance
from emp_pipeline.settings import Settings
from emp_pipeline_tests.e2e.conftest import (
    BARS_CHECKS,
    REPO_ROOT,
    Deployment,
    Materialization,
    _start,
    free_port,
    stop_process_group,
)
from emp_pipeline_tests.e2e.test_make_ui import STARTUP_TIMEOUT_S, serving

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package: `apt-get install -y chromium`
ARTIFACTS = REPO_ROOT / "artifacts" / "ui"
PAGE_TIMEOUT_MS = 60_000
MARKET_DATA_ASSETS = ("instrument_universe", "market_bars")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's browser with `apt-get install -y chromium` (as root)"
        )
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium refuses its sandbox.
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def _dismiss_community_dialog(page: Page) -> None:
    """A fresh browser profile is greeted by a "Join the Dagster community" dialog covering the page."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=5_000)
    except PlaywrightTimeoutError:
        return
    skip.click()
    skip.wait_for(state="hidden")


def _screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_asset_graph_shows_the_pipeline_assets_and_their_checks(
    deployment: Deployment, materialized_bars: Materialization, page: Page
):
    page.goto(f"{deployment.webserver_url}/locations/{deployment.location_name}/asset-groups/market_data")
    _dismiss_community_dialog(page)
    for name in MARKET_DATA_ASSETS:
        page.get_by_text(name, exact=True).first.wait_for(state="visible")
    checks_summary = page.get_by_text("Passed").first
    checks_summary.wait_for(state="visible")
    shot = _screenshot(page, "asset_graph")

    text = page.inner_text("body")
    assert all(name in text for name in MARKET_DATA_ASSETS), text[:2000]
    assert f"{len(BARS_CHECKS)} / " in checks_summary.inner_text()  # the market_bars node's check summary
    assert shot.stat().st_size > 10_000


def test_asset_page_lists_every_check_of_market_bars_as_succeeded(
    deployment: Deployment, materialized_bars: Materialization, page: Page
):
    page.goto(f"{deployment.webserver_url}/assets/market_bars?view=checks")
    _dismiss_community_dialog(page)
    for name in BARS_CHECKS:
        page.get_by_text(name, exact=True).first.wait_for(state="visible")
    page.get_by_text("Succeeded").first.wait_for(state="visible")
    shot = _screenshot(page, "market_bars_checks")

    # The checks list reads "<name>\n<name>\n<status>" per check: the status follows the name's lines.
    lines = [line.strip() for line in page.inner_text("body").splitlines() if line.strip()]
    statuses = {}
    for index, line in enumerate(lines[:-2]):
        if line in BARS_CHECKS and line not in statuses and lines[index + 1] == line:
            statuses[line] = lines[index + 2]
    assert statuses == dict.fromkeys(BARS_CHECKS, "Succeeded"), lines[:80]
    assert shot.stat().st_size > 10_000


@pytest.fixture
def ui_after_an_in_process_run(tmp_path: Path) -> Iterator[str]:
    """`make ui`'s wrapper (`make ui EMP_HOME=...`) on a home where universe_job ran as `emp demo` runs it."""
    settings = Settings.from_env({"EMP_HOME": str(tmp_path / "home")})
    assert _run_job(build_definitions(settings), demo_instance(settings), "universe_job", None).success
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DAGSTER_", "EMP_"))}
    log = tmp_path / "ui.log"
    process = _start(
        ["python", "-m", "emp_pipeline.instance.dagster_dev", "-p", str(port)],
        {**env, "EMP_HOME": str(settings.home)},
        log,
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not serving(port):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the UI did not come up:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(process)


def test_overview_timeline_shows_a_run_made_in_process(ui_after_an_in_process_run: str, page: Page):
    page.goto(f"{ui_after_an_in_process_run}/overview/timeline")
    _dismiss_community_dialog(page)
    # A row per job with runs in the window, under its code location with the count of their runs; a
    # schedule could add a row without runs, but universe_job has none.
    page.get_by_text("universe_job", exact=True).first.wait_for(state="visible")
    shot = _screenshot(page, "overview_timeline")
    lines = [line.strip() for line in page.inner_text("body").splitlines() if line.strip()]
    location = lines.index("emp_pipeline")
    assert lines[location + 1 : location + 3] == ["1", "universe_job"], lines
    assert shot.stat().st_size > 10_000
