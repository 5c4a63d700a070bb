"""benchmarks/intraday.py runs end to end at tiny sizes and ends with its four figures.

The full sizes take minutes; this keeps the script from rotting between benchmark runs (an API it calls
changing under it) and checks that what it times did the work: every generated bar was ingested, every
H1 bar perceived.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from emp_pipeline.domain.timeframes import Timeframe, bar_open_times

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "intraday.py"
FIGURES = ("intraday_features_s", "intraday_evolution_s", "m1_ingest_s", "intraday_parity_replay_s")
FIGURE_LINE = re.compile(r"^(\w+)=(\S+)$")


def test_the_intraday_benchmark_prints_its_four_figures_at_tiny_sizes():
    command = [sys.executable, str(SCRIPT), "--symbols", "2", "--h1-days", "15", "--parity-days", "2"]
    command += ["--m1-days", "2", "--generations", "1", "--population", "8"]
    result = subprocess.run(
        command, cwd=SCRIPT.parent.parent, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    values = dict(match.groups() for line in lines if (match := FIGURE_LINE.match(line)))

    assert [line.split("=")[0] for line in lines[-len(FIGURES) :]] == list(FIGURES)
    for name in FIGURES:
        assert math.isfinite(float(values[name])) and float(values[name]) > 0, (name, values[name])
    start = pd.Timestamp("2019-01-01", tz="UTC")
    hours = bar_open_times("24x5", Timeframe.H1, start, start + pd.Timedelta(days=15))
    assert int(values["h1_bars"]) == 2 * len(hours)
    # Two FX days (17:00 to 17:00 New York, the partitions the run stores) of a bar every minute.
    assert int(values["m1_bars"]) == 2 * 24 * 60
    assert int(values["parity_bars"]) == len(hours[hours >= hours[-1] + pd.Timedelta(hours=1, days=-2)])
