"""`emp demo --timeframe H1`: the hourly EURUSD study on the bundled 2017 sample, end to end, offline.

The home is on /dev/shm where there is one: the demo stores ~2,000 Dagster events in SQLite, and on a
shared disk each commit's fsync made the bar update alone take minutes (it takes ~20 s in memory).
"""

import io
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests
from dagster import AssetCheckKey, AssetKey

from emp_pipeline.broker.paper import PROTECTIVE_EXIT_PREFIX
from emp_pipeline.cli import main
from emp_pipeline.demo import DEMO_ACCOUNT, demo_instance
from emp_pipeline.instance.dagster_dev import GRACE_S
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.orders import fills_for_order, orders_for_account
from emp_pipeline.registry.positions import get_or_create_paper_account
from emp_pipeline.registry.research import active_strategies
from emp_pipeline.settings import UNIVERSES_DIR, Settings
from emp_pipeline.storage.parquet_frames import DatedFrameStore
from emp_pipeline_tests.e2e.conftest import REPO_ROOT, VENV_BIN, free_port
from emp_pipeline_tests.e2e.test_docs_commands import HOURLY_DEMO_MARKER
from emp_pipeline_tests.e2e.test_make_ui import STARTUP_TIMEOUT_S, like_a_terminal, serving, session_members

MEMORY = Path("/dev/shm")
README = Path(__file__).resolve().parents[2] / "README.md"
# The command README.md's first screen prints for the hourly study: this test runs exactly it (the doc test
# does not, see the block's marker).
README_COMMAND = ".venv/bin/emp demo --timeframe H1"
PAPER_BARS = 48  # the hourly demo's default span of paper-traded bars


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A folder in memory (removed afterwards) where there is /dev/shm, else the test's temporary folder."""
    if not MEMORY.is_dir():
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="emp-h1demo-", dir=MEMORY))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_hourly_demo_trades_its_champions_bar_by_bar_with_parity(root, monkeypatch):
    monkeypatch.setenv("EMP_HOME", str(root / "emp_home"))
    for name in ("EMP_DATA_DIR", "EMP_DATABASE_URL", "DATABASE_URL", "EMP_TIMEFRAME", "EMP_UNIVERSE_FILE"):
        monkeypatch.delenv(name, raising=False)
    out = io.StringIO()

    block = f"```bash\n# not run by the doc test: {HOURLY_DEMO_MARKER}\n{README_COMMAND}\n```"
    assert block in README.read_text()
    assert main(README_COMMAND.split()[1:], out=out) == 0

    text = out.getvalue()
    assert "FAILED" not in text and "failed:" not in text, text
    # Its own home: lake, registry and Dagster instance under EMP_HOME/h1, nothing of the daily demo's.
    home = root / "emp_home" / "h1"
    assert not (root / "emp_home" / "data").exists() and not (root / "emp_home" / "registry.sqlite").exists()
    settings = Settings.from_env(
        {
            "EMP_HOME": str(home),
            "EMP_UNIVERSE_FILE": str(UNIVERSES_DIR / "sample_fx_h1.yaml"),
            "EMP_TIMEFRAME": "H1",
        }
    )
    # Every FX day of 2017 updated; the newest walk-forward period evolved on three months of hours.
    assert "market_bars: 260 materialization(s)" in text
    assert "walk-forward study: 3 monthly period(s) 2017-09..2017-11" in text

    # Rule regimes are labelled after a few weeks of warm-up, not left neutral all year.
    regimes = DatedFrameStore(settings.data_dir, "market_regimes").read_window()
    assert regimes["warmup"].mean() < 0.1
    assert regimes.loc[~regimes["warmup"], "regime"].nunique() >= 3

    bars = DatedFrameStore(settings.data_dir, "market_bars").read_window()
    bar_times = pd.DatetimeIndex(bars["date"]).sort_values()
    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            champions = active_strategies(session)
            orders = orders_for_account(session, get_or_create_paper_account(session, DEMO_ACCOUNT).id)
            fills = {o.client_order_id: fills_for_order(session, o.client_order_id) for o in orders}
    finally:
        engine.dispose()
    assert champions, text
    assert orders and {order.strategy_id for order in orders} <= {c.id for c in champions}, text
    assert f"x {PAPER_BARS} paper ticks" in text
    # A decision on an hourly close fills at the open of the next hour's bar, never on its own bar.
    decisions = [o for o in orders if not o.client_order_id.startswith(PROTECTIVE_EXIT_PREFIX)]
    filled = [o for o in decisions if fills[o.client_order_id]]
    assert filled, text
    for order in filled:
        next_bar = bar_times[bar_times.searchsorted(pd.Timestamp(order.bar_time), side="right")]
        for fill in fills[order.client_order_id]:
            assert pd.Timestamp(fill.filled_at) == next_bar
            bar = bars.loc[(bars["date"] == next_bar) & (bars["symbol"] == order.symbol)].iloc[0]
            assert abs(fill.price / bar["open"] - 1) < 1e-3

    # The champions replayed bar by bar through the live path match the kernel: the parity check passed.
    instance = demo_instance(settings)
    check = AssetCheckKey(AssetKey("champion_strategies"), "champions_live_parity")
    (record,) = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)
    evaluation = record.event.dagster_event.event_specific_data
    assert evaluation.passed, evaluation.description
    assert evaluation.metadata["champions"].value == len(champions)

    # The UI: the printed command is make ui on the study (its home and variables, as the demo ran). Run as
    # printed, it serves the study's definitions (the FX days of 2017 as bar partitions, every one
    # materialized) on an instance with the root dagster.yaml's queue, live-execution limit and launcher,
    # and SIGTERM stops it with everything it started.
    (command,) = [line.split("(")[-1] for line in text.splitlines() if line.startswith("dagster home:")]
    assert command == f"make ui TIMEFRAME=H1 EMP_HOME={root / 'emp_home'} opens it in dagster dev)"
    ui = _ui_answers(command.removesuffix(" opens it in dagster dev)").split(), root)
    assert ui["assetNodeOrError"]["partitionStats"] == {"numMaterialized": 260, "numPartitions": 260}
    assert ui["instance"] == {
        "runQueuingSupported": True,
        "runLauncher": {"name": "LocalProcessRunLauncher"},
        "runQueueConfig": {"tagConcurrencyLimitsYaml": "- key: emp/live-execution\n  limit: 1\n"},
    }


UI_QUERY = """{
  assetNodeOrError(assetKey: {path: ["market_bars"]}) {
    ... on AssetNode { partitionStats { numMaterialized numPartitions } }
  }
  instance { runQueuingSupported runLauncher { name } runQueueConfig { tagConcurrencyLimitsYaml } }
}"""


def _ui_answers(make_command: list[str], root: Path) -> dict:
    """Run `make ui ...` in the repository root, answer UI_QUERY from its GraphQL endpoint, stop it with
    SIGTERM and check nothing it started is left."""
    port = free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("MAKE", "DAGSTER_", "EMP_"))
    }
    log = root / "make-ui.log"
    with log.open("wb") as handle:
        make = subprocess.Popen(
            [*make_command, "-o", f"{VENV_BIN}/emp", f"VENV={VENV_BIN.parent}", f"UI_ARGS=-p {port}"],
            cwd=REPO_ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=like_a_terminal,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not serving(port):
            assert make.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"make ui did not come up:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        answer = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": UI_QUERY}, timeout=60)
        os.kill(make.pid, signal.SIGTERM)
        stopped_at = time.monotonic()
        while session_members(make.pid) and time.monotonic() - stopped_at < GRACE_S + 10:
            time.sleep(0.2)
        assert not session_members(make.pid)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        make.wait(timeout=30)
        for pid in session_members(make.pid):
            os.kill(pid, signal.SIGKILL)
    assert "WARNING" not in log.read_text(), log.read_text()
    return answer.json()["data"]
