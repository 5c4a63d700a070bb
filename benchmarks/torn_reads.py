"""Torn reads: readers racing a writer that replaces a Parquet file atomically, in a loop.

A writer process rewrites one year file of a dated store over and over (each version a different size, so a
footer read from one version and pages from another cannot line up by chance). Two reader threads read it
for the same time, once through `pd.read_parquet(path)` (which opens the path twice: how the store read
before issue 15) and once through the store's `read_window` (one open handle). A read fails when it raises
or returns a mixture of versions. Prints the counts for each, one `name=value` per line.

    python benchmarks/torn_reads.py [seconds per reader kind, default 8]
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event
from pathlib import Path

import numpy as np
import pandas as pd

from emp_pipeline.storage.parquet_frames import DatedFrameStore

DATASET = "bars"
WINDOW = ("2021-01-01", "2022-01-01")
READERS = 2
PARQUET_LOGGER = "emp_pipeline.storage.parquet_frames"


def version(number: int) -> pd.DataFrame:
    """Version ``number``: 365 x (1 + number % 7) rows whose every value is ``number``."""
    days = pd.date_range(WINDOW[0], periods=365, freq="D", tz="UTC")
    index = np.arange(365 * (1 + number % 7))
    return pd.DataFrame(
        {
            "date": days[index % 365],
            "symbol": [f"S{i // 365:02d}" for i in index],
            "value": np.full(len(index), float(number)),
        }
    )


def replace_forever(root: str, stop: Event) -> None:
    logging.getLogger(PARQUET_LOGGER).setLevel(logging.ERROR)  # every replace here is on purpose
    store = DatedFrameStore(root, DATASET)
    number = 0
    while not stop.is_set():
        number += 1
        store.write_window(version(number), *WINDOW, replace_history=True)


def race(read: Callable[[], pd.DataFrame], seconds: float) -> tuple[int, int]:
    """(reads, failed reads) of READERS threads calling ``read`` for ``seconds``."""
    counts = {"reads": 0, "failed": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def reader() -> None:
        while time.monotonic() < deadline:
            try:
                frame = read()
                values = frame["value"].unique()
                failed = len(values) != 1 or len(frame) != len(version(int(values[0])))
            except (OSError, ValueError):
                failed = True
            with lock:
                counts["reads"] += 1
                counts["failed"] += failed

    threads = [threading.Thread(target=reader) for _ in range(READERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts["reads"], counts["failed"]


def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = DatedFrameStore(root, DATASET)
        store.write_window(version(0), *WINDOW)
        year_file = Path(root) / DATASET / "2021.parquet"
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        writer = context.Process(target=replace_forever, args=(root, stop))
        writer.start()
        try:
            time.sleep(1.0)
            two_opens = race(lambda: pd.read_parquet(year_file), seconds)
            one_handle = race(store.read_window, seconds)
        finally:
            stop.set()
            writer.join()
    print(f"torn_reads_path_reads={two_opens[0]}")
    print(f"torn_reads_path_failed={two_opens[1]}")
    print(f"torn_reads_store_reads={one_handle[0]}")
    print(f"torn_reads_store_failed={one_handle[1]}")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 8.0)
