"""The Parquet IO manager: stores a range of time partitions in one call, replacing what was there."""

from __future__ import annotations

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext

from emp_pipeline.storage.datasets import dataset_named
from emp_pipeline.storage.parquet_frames import DatedFrameStore

# Output metadata by which an asset run replaces stored history explicitly (see DatedFrameStore).
REPLACE_HISTORY_METADATA = "replace_history"


class ParquetFrameIOManager(ConfigurableIOManager):
    """Each asset's dataset (storage/datasets.py) under ``base_dir``; partition windows map to date ranges.

    Dagster's default pickle IO manager cannot take a multi-partition output, which single-run backfills
    produce; this one writes the whole window and loads any window a downstream partition mapping asks for.
    """

    base_dir: str

    def _store(self, context: InputContext | OutputContext) -> DatedFrameStore:
        return dataset_named("/".join(context.asset_key.path)).store(self.base_dir)

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}, not a DataFrame"
            )
        store = self._store(context)
        if context.has_asset_partitions:
            window = context.asset_partitions_time_window
            replace = context.output_metadata.get(REPLACE_HISTORY_METADATA)
            rows = store.write_window(
                obj, window.start, window.end, replace_history=bool(replace is not None and replace.value)
            )
        else:
            rows = store.write_all(obj)
        context.add_output_metadata({"stored_rows": rows, "path": str(store.directory)})

    def load_input(self, context: InputContext) -> pd.DataFrame:
        store = self._store(context)
        if context.has_asset_partitions:
            window = context.asset_partitions_time_window
            return store.read_window(window.start, window.end)
        return store.read_all()
