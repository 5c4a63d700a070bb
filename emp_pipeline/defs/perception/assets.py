"""Perception assets: the sensory features and the market regimes of every symbol and day.

Both are partitioned like the bars (months of daily bars, trading days of intraday bars; see
defs/partitions.py) and read their look-back through a time-window partition mapping; what a day's values
are computed from (a fixed yearly anchor, so neither a backfill's split nor the chunking changes anything)
is the domain's `anchored_perception`, which the look-ahead and parity gates judge too.
"""
# No `from __future__ import annotations` here: Dagster inspects the assets' context annotations at runtime.

import base64
import warnings
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    MetadataValue,
    Output,
    PartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
)

from emp_pipeline.data.sample import load_sample_macro_frame
from emp_pipeline.defs.market_data.resources import MarketDataResource
from emp_pipeline.defs.partitions import BarChunking, lookback_partitions
from emp_pipeline.defs.perception.resources import FredResource, RegimeClassifierResource
from emp_pipeline.defs.publication import StagedCheck, report_then_gate
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.domain.anchored_perception import (
    FEATURE_HISTORY_YEARS,
    REGIME_HISTORY_YEARS,
    classify_by_year,
    compute_features_by_year,
    year_start,
)
from emp_pipeline.domain.regimes import PROBABILITY_COLUMNS, REGIME_LABELS, make_classifier
from emp_pipeline.domain.sensory import FEATURE_COLUMNS, MACRO_LOOKBACK_DAYS, SensoryCortex, macro_coverage
from emp_pipeline.registry.regimes import upsert_market_regimes
from emp_pipeline.reporting.formatting import percent_text
from emp_pipeline.reporting.regime_chart import regime_chart_png
from emp_pipeline.storage.datasets import MARKET_BARS, MARKET_REGIMES, SENSORY_FEATURES

GROUP = "perception"
OWNERS = ["team:research"]
PROBABILITY_TOLERANCE = 1e-9
# Metadata of the newest regimes partition a run writes: the open time of its newest bar (UTC, to the minute).
NEWEST_BAR_METADATA = "newest_bar"
MACRO_MARGIN_DAYS = 30
EXAMPLES_SHOWN = 5


def _lookback_mapping(chunking: BarChunking, history_years: int) -> TimeWindowPartitionMapping:
    """The bar chunks from Jan 1 of (year - history_years) through the partition's own, for any year."""
    # Chunks before the first partition do not exist; the look-back then simply starts at the first one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return TimeWindowPartitionMapping(
            start_offset=-lookback_partitions(chunking, history_years),
            allow_nonexistent_upstream_partitions=True,
        )


# ------------------------------------------------------------------------------------------- macro


def macro_for_features(
    fred: FredResource, market_data: MarketDataResource, history_start: pd.Timestamp, end: pd.Timestamp
) -> tuple[pd.DataFrame | None, str, str]:
    """Macro for WHY, its origin and its status: FRED with a key (a FRED outage leaves the missing series
    neutral and the status says which), the bundled series with sample bars, else none."""
    if fred.is_configured:
        first = (history_start - timedelta(days=MACRO_LOOKBACK_DAYS + MACRO_MARGIN_DAYS)).date()
        fetched = fred.source().fetch(first, (end - timedelta(days=1)).date())
        return fetched.frame, "fred", fetched.status
    if market_data.source == "sample":
        return load_sample_macro_frame(), "sample", "complete"
    return None, "none", "no macro source configured: WHY is neutral"


# ------------------------------------------------------------------------------------------- checks


def settled_rows_with_nan(features: pd.DataFrame, columns: tuple[str, ...] = FEATURE_COLUMNS) -> np.ndarray:
    """Rows past their warm-up that still hold a NaN feature: a model downstream would read garbage."""
    values = features.loc[:, list(columns)].to_numpy(dtype=np.float64)
    return ~features["warmup"].to_numpy(dtype=bool) & np.isnan(values).any(axis=1)


def regime_frame_problems(regimes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(rows whose probabilities miss 1 by more than the tolerance or are NaN, rows with unknown labels)."""
    probabilities = regimes.loc[:, list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64)
    bad_sum = ~(np.abs(probabilities.sum(axis=1) - 1.0) <= PROBABILITY_TOLERANCE)
    return bad_sum, ~regimes["regime"].isin(REGIME_LABELS).to_numpy()


# ------------------------------------------------------------------------------------------- metadata


def _examples(frame: pd.DataFrame, mask: np.ndarray) -> list[dict[str, str]]:
    rows = frame.loc[mask, ["symbol", "date"]].head(EXAMPLES_SHOWN)
    return [{"symbol": str(s), "date": str(d.date())} for s, d in rows.itertuples(index=False)]


def _window_metadata(frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, object]:
    return {
        "rows": len(frame),
        "symbols": int(frame["symbol"].nunique()),
        "first_day": str(start.date()),
        "last_day": str((end - timedelta(days=1)).date()),
        "warmup_rows": int(frame["warmup"].sum()),
    }


def regime_share_table(regimes: pd.DataFrame) -> str:
    """Markdown: per symbol, the share of each label among its non-warm-up days, and the warm-up count."""
    settled = regimes.loc[~regimes["warmup"].astype(bool)]
    shares = pd.crosstab(settled["symbol"], settled["regime"], normalize="index").reindex(
        columns=list(REGIME_LABELS), fill_value=0.0
    )
    table = shares.reindex(sorted(regimes["symbol"].unique()), fill_value=0.0)
    table = table.map(lambda share: percent_text(share, 1))
    table.insert(0, "days", regimes.groupby("symbol").size().reindex(table.index))
    table["warmup_days"] = regimes.groupby("symbol")["warmup"].sum().reindex(table.index).astype(int)
    return table.reset_index().rename(columns={"index": "symbol"}).to_markdown(index=False)


# ------------------------------------------------------------------------------------------- assets


def sensory_features(
    context: AssetExecutionContext,
    bars: pd.DataFrame,
    market_data: MarketDataResource,
    fred: FredResource,
    lake: DataLakeResource,
) -> Iterator:
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
    history_start = year_start(start.year - FEATURE_HISTORY_YEARS)
    macro, macro_source, macro_status = macro_for_features(fred, market_data, history_start, end)
    cortex = SensoryCortex(market_data.universe().instruments)
    features = compute_features_by_year(cortex, bars, macro, start, end)

    incomplete = settled_rows_with_nan(features)
    check = StagedCheck(
        "features_complete_after_warmup",
        blocking=True,
        passed=not incomplete.any(),
        description=f"{int(incomplete.sum())} settled rows hold NaN features",
        failures=int(incomplete.sum()),
        examples=tuple(_examples(features, incomplete)),
    )
    yield from report_then_gate(context, SENSORY_FEATURES, features, [check], lake.base_dir)

    coverage = macro_coverage(features)
    context.add_asset_metadata(
        {
            "macro_coverage": MetadataValue.md(
                pd.DataFrame(
                    {"role": list(coverage), "share_of_bars": [percent_text(v, 1) for v in coverage.values()]}
                ).to_markdown(index=False)
            ),
        },
        partition_key=context.partition_key_range.end,
    )
    yield Output(
        features,
        metadata={
            **_window_metadata(features, start, end),
            "macro_source": macro_source,
            "macro_status": macro_status,
        },
    )


def sensory_features_asset(partitions_def: PartitionsDefinition, chunking: BarChunking) -> AssetsDefinition:
    """`sensory_features` over the partitions `build_definitions` made from the settings."""
    return asset(
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="frame_io_manager",
        group_name=GROUP,
        kinds={"pandas", "parquet"},
        owners=OWNERS,
        ins={
            "bars": AssetIn(
                MARKET_BARS.name, partition_mapping=_lookback_mapping(chunking, FEATURE_HISTORY_YEARS)
            )
        },
        check_specs=[
            AssetCheckSpec(
                "features_complete_after_warmup",
                asset=SENSORY_FEATURES.name,
                blocking=True,
                description="no NaN in any feature on a row whose look-backs are complete (warmup False)",
            )
        ],
        description="The sensory cortex's causal features (WHAT, HOW, WHEN, WHY, ANOMALY) per symbol and "
        f"day. Each year's days are computed from bars since Jan 1 {FEATURE_HISTORY_YEARS} years earlier, "
        "so a day's features do not depend on how a backfill was split. WHY reads FRED when FRED_API_KEY "
        "is set, the bundled macro series with the sample data, and is neutral otherwise. Stored only "
        "after its blocking check passes.",
    )(sensory_features)


def market_regimes(
    context: AssetExecutionContext,
    bars: pd.DataFrame,
    features: pd.DataFrame,
    regime_classifier: RegimeClassifierResource,
    database: DatabaseResource,
    lake: DataLakeResource,
) -> Iterator:
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
    kind = regime_classifier.kind
    regimes = classify_by_year(kind, bars, features, start, end, windows=regime_classifier.windows())
    bad_sum, unknown = regime_frame_problems(regimes)
    checks = [
        StagedCheck(
            "probabilities_sum_to_one",
            blocking=True,
            passed=not bad_sum.any(),
            description=f"{int(bad_sum.sum())} rows whose probabilities do not sum to 1",
            failures=int(bad_sum.sum()),
            examples=tuple(_examples(regimes, bad_sum)),
        ),
        StagedCheck(
            "labels_known",
            blocking=True,
            passed=not unknown.any(),
            description=f"{int(unknown.sum())} rows with a label outside {', '.join(REGIME_LABELS)}",
            failures=int(unknown.sum()),
            examples=tuple(_examples(regimes, unknown)),
        ),
    ]
    yield from report_then_gate(context, MARKET_REGIMES, regimes, checks, lake.base_dir)

    # Published only now: the registry first, then the Parquet the live job reads (the IO manager writes it
    # when the output is yielded); the materialization event, which the live sensor follows, comes last.
    with database.session() as session:
        upserted = upsert_market_regimes(session, regimes, make_classifier({"kind": kind}).name)
    if not regimes.empty:
        # The whole stored history around this run's window (not yet stored: the IO manager writes it later).
        stored = (lake.read(MARKET_REGIMES, None, start), regimes, lake.read(MARKET_REGIMES, end, None))
        history = pd.concat([frame for frame in stored if not frame.empty], ignore_index=True)
        png = regime_chart_png(lake.read(MARKET_BARS), history)
        chart = f"![regimes](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
        # Output metadata is copied onto every partition's event of a range run: the newest bar, the table
        # and the picture go on the newest chunk only, which is what the UI shows as the latest one.
        context.add_asset_metadata(
            {
                # The live sensor's "one run per new bar": a chunk gains bars while its key stays the same.
                NEWEST_BAR_METADATA: f"{regimes['date'].max():%Y-%m-%dT%H:%M}",
                "regime_share": MetadataValue.md(regime_share_table(regimes)),
                "regime_chart": MetadataValue.md(chart),
                "regime_chart_bytes": len(png),
            },
            partition_key=context.partition_key_range.end,
        )
    yield Output(
        regimes,
        metadata={**_window_metadata(regimes, start, end), "classifier": kind, "registry_rows": upserted},
    )


def market_regimes_asset(partitions_def: PartitionsDefinition, chunking: BarChunking) -> AssetsDefinition:
    """`market_regimes` over the partitions `build_definitions` made from the settings."""
    return asset(
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="frame_io_manager",
        group_name=GROUP,
        kinds={"pandas", "parquet", "sql"},
        owners=OWNERS,
        ins={
            "bars": AssetIn(
                MARKET_BARS.name, partition_mapping=_lookback_mapping(chunking, REGIME_HISTORY_YEARS)
            ),
            "features": AssetIn(
                SENSORY_FEATURES.name, partition_mapping=_lookback_mapping(chunking, REGIME_HISTORY_YEARS)
            ),
        },
        check_specs=[
            AssetCheckSpec(
                "probabilities_sum_to_one",
                asset=MARKET_REGIMES.name,
                blocking=True,
                description="the regime probabilities of every row sum to 1 within "
                f"{PROBABILITY_TOLERANCE:g}",
            ),
            AssetCheckSpec(
                "labels_known",
                asset=MARKET_REGIMES.name,
                blocking=True,
                description=f"every label is one of {', '.join(REGIME_LABELS)}",
            ),
        ],
        description="The causal regime label and label probabilities per symbol and day, stored as Parquet "
        "and upserted into the registry's market_regimes table (re-materializing replaces), both only after "
        "the blocking checks pass (a failing check quarantines the frame and publishes nothing). Classifier "
        "from EMP_REGIME_CLASSIFIER: rules (default) or hmm, refitted per calendar year on the "
        f"{REGIME_HISTORY_YEARS} years before it.",
    )(market_regimes)
