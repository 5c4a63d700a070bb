"""Extract the hourly EURUSD bars shipped inside the `gym-anytrading` package into our offline sample.

A one-off, rerunnable script. It reads the package's data file through the installed distribution's file list
and never imports `gym_anytrading` (nor its dependencies), so a throwaway venv with only the package and
pandas does:

    python3 -m venv /tmp/gym-venv
    /tmp/gym-venv/bin/pip install --no-deps gym-anytrading==2.0.0 && /tmp/gym-venv/bin/pip install pandas
    /tmp/gym-venv/bin/python scripts/extract_intraday_sample.py

It writes `emp_pipeline/data/sample/EURUSD.csv.gz` and its section of `ORIGIN.md`. Only the numbers are taken;
timestamps are rewritten from the origin's `dd.mm.yyyy HH:MM:SS.fff` (UTC) to ISO 8601 with a `Z`.
"""

from __future__ import annotations

import importlib.metadata

import pandas as pd
from extract_sample_data import SAMPLE_DIR, write_gzip_csv, write_origin_sections

PACKAGE = "gym-anytrading"
VERSION = "2.0.0"
ORIGIN_FILE = "gym_anytrading/datasets/data/FOREX_EURUSD_1H_ASK.csv"
TARGET = "EURUSD.csv.gz"
COLUMNS = ["date", "open", "high", "low", "close", "volume"]

NOTES = (
    "ASK prices, while the pipeline's bars are BID prices (cTrader's trendbars are bid; buys pay the spread "
    "on top). The numbers are kept as published, not shifted by a guessed spread, and the pipeline treats "
    "them as its bid series: every price level sits one spread above the true bid. Under a constant spread "
    "a round trip's profit is the same whichever side the bars quote, as long as one spread is paid per "
    "round trip; what differs is that intrabar stop and take-profit triggers are evaluated on ask highs and "
    "lows, off by up to one spread, and that the absolute level is one spread high. Volume is the origin's "
    "column as published; the origin does not state its unit. The origin states UTC; bars are labelled by "
    "their open time. 15 bars of the FX week are absent, all on Christmas Day (2017-12-24 22:00 .. "
    "2017-12-25 21:00 UTC, no trading); the other 6,225 are every hour of the 24x5 week (Sunday 17:00 .. "
    "Friday 17:00 New York)."
)


def _load() -> tuple[pd.DataFrame, importlib.metadata.Distribution]:
    distribution = importlib.metadata.distribution(PACKAGE)
    if distribution.version != VERSION:
        raise SystemExit(f"{PACKAGE} {distribution.version} is installed; this extract is of {VERSION}")
    path = distribution.locate_file(ORIGIN_FILE)
    frame = pd.read_csv(path, dtype={"Time": str})
    times = pd.to_datetime(frame["Time"], format="%d.%m.%Y %H:%M:%S.%f", utc=True)
    out = pd.DataFrame(
        {
            "date": times.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "open": frame["Open"],
            "high": frame["High"],
            "low": frame["Low"],
            "close": frame["Close"],
            "volume": frame["Volume"],
        }
    )
    return out[COLUMNS], distribution


def main() -> None:
    frame, distribution = _load()
    path = SAMPLE_DIR / TARGET
    write_gzip_csv(frame, path)
    size = path.stat().st_size
    license_name = distribution.metadata.get("License") or "see the package"
    title = f"## `{TARGET}`: EUR/USD, hourly (H1), ask prices"
    section = "\n".join(
        [
            title,
            f"- origin: PyPI package `{PACKAGE}` {distribution.version} ({license_name} license), file "
            f"`{ORIGIN_FILE}`",
            f"- columns: {', '.join(frame.columns)} (no adj_close: FX has no corporate actions; the "
            "reader takes adj_close = close)",
            f"- range: {frame['date'].iloc[0]} .. {frame['date'].iloc[-1]} ({len(frame):,} rows)",
            f"- size: {size:,} bytes (gzip)",
            f"- notes: {NOTES}",
            "",
            "",
        ]
    )
    write_origin_sections({title: section})
    print(f"{TARGET}: {len(frame)} rows, {size} bytes")


if __name__ == "__main__":
    main()
