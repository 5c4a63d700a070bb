"""Fault injection: what an operator's bad day does to the lake, the registry and the live decisions.

Each fault is real, not simulated: a writer process is SIGKILLed while it writes, readers race a writer that
replaces files in a loop, a source answers with fewer bars than are stored. After every fault the stored
bytes are what they were before it (or a complete earlier version), and the next writer cleans up.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.storage.parquet_frames import DatedFrameStore, HistoryLossError

DATASET = "bars"
WINDOW = ("2021-01-01", "2022-01-01")
RACE_SECONDS = 3.0
KILL_ROUNDS = 12
BIG_VERSION_ROWS = 400_000  # large enough that a write takes tens of milliseconds: a kill lands inside it


def _version(number: int, rows: int) -> pd.DataFrame:
    """Version ``number`` of the window: ``rows`` rows whose every value is ``number``, so a read can tell
    whether it got one whole version (all values equal, the row count of that version) or a mixture."""
    days = pd.date_range(WINDOW[0], periods=365, freq="D", tz="UTC")
    index = np.arange(rows)
    return pd.DataFrame(
        {
            "date": days[index % len(days)],
            "symbol": [f"S{i // len(days):05d}" for i in index],
            "value": np.full(rows, float(number)),
        }
    )


def _rows_of(number: int) -> int:
    return 365 * (1 + number % 7)


def _replace_in_a_loop(root: str, stop: multiprocessing.synchronize.Event) -> None:
    store = DatedFrameStore(root, DATASET)
    number = 0
    while not stop.is_set():
        number += 1
        store.write_window(_version(number, _rows_of(number)), *WINDOW, replace_history=True)


def _write_big_versions_forever(root: str, first: int) -> None:
    store = DatedFrameStore(root, DATASET)
    number = first
    while True:
        store.write_window(_version(number, BIG_VERSION_ROWS), *WINDOW)
        number += 1


def _assert_one_whole_version(frame: pd.DataFrame) -> float:
    values = frame["value"].unique()
    assert len(values) == 1, f"a read mixed versions {values[:5]}"
    return float(values[0])


@pytest.fixture
def spawn() -> Iterator[multiprocessing.context.SpawnContext]:
    """Processes that start clean (no forked locks or threads of the test process)."""
    yield multiprocessing.get_context("spawn")


def test_readers_racing_an_atomic_replace_never_fail_nor_see_a_torn_file(tmp_path: Path, spawn) -> None:
    store = DatedFrameStore(tmp_path, DATASET)
    store.write_window(_version(0, _rows_of(0)), *WINDOW)
    stop = spawn.Event()
    writer = spawn.Process(target=_replace_in_a_loop, args=(str(tmp_path), stop))
    writer.start()
    reads, failures = [0], []

    def read_until(deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                frame = store.read_window()
                number = _assert_one_whole_version(frame)
                assert len(frame) == _rows_of(int(number))
                reads[0] += 1
            except (OSError, AssertionError, ValueError) as error:
                failures.append(repr(error))

    try:
        time.sleep(0.5)  # the writer is replacing before the readers start
        deadline = time.monotonic() + RACE_SECONDS
        readers = [threading.Thread(target=read_until, args=(deadline,)) for _ in range(2)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
    finally:
        stop.set()
        writer.join(timeout=30)
    assert writer.exitcode == 0
    assert failures == [], f"{len(failures)} of {reads[0] + len(failures)} reads failed: {failures[:3]}"
    assert reads[0] > 100


def test_a_writer_killed_mid_write_leaves_a_whole_version_and_the_next_writer_cleans_up(
    tmp_path: Path, spawn
) -> None:
    store = DatedFrameStore(tmp_path, DATASET)
    store.write_window(_version(0, BIG_VERSION_ROWS), *WINDOW)
    directory = tmp_path / DATASET
    orphans_seen = 0
    for round_number in range(KILL_ROUNDS):
        writer = spawn.Process(
            target=_write_big_versions_forever, args=(str(tmp_path), 1000 * (round_number + 1))
        )
        writer.start()
        deadline = time.monotonic() + 60
        while not list(directory.glob(".*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        assert writer.exitcode == -signal.SIGKILL
        orphans_seen += bool(list(directory.glob(".*.tmp")))

        frame = store.read_window()
        assert len(frame) == BIG_VERSION_ROWS
        _assert_one_whole_version(frame)

    assert orphans_seen > 0, "no kill landed while a temporary file existed"
    store.write_window(_version(1, BIG_VERSION_ROWS), *WINDOW)
    assert not list(directory.glob(".*.tmp"))
    assert _assert_one_whole_version(store.read_window()) == 1.0


def test_a_short_source_leaves_the_stored_bytes_untouched(tmp_path: Path) -> None:
    store = DatedFrameStore(tmp_path, DATASET)
    store.write_window(_version(0, 38), *WINDOW)
    before = (tmp_path / DATASET / "2021.parquet").read_bytes()
    for short in (_version(1, 10), _version(1, 0)):
        with pytest.raises(HistoryLossError):
            store.write_window(short, *WINDOW)
    assert (tmp_path / DATASET / "2021.parquet").read_bytes() == before
