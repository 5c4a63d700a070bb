"""Perception assets: the sensory features and the market regimes of every symbol and day.

Both are daily partitioned like `market_bars` and read their look-back through a time-window partition
mapping. The stored value of a day must not depend on how a range was split into runs, so every day is
computed from history that starts at a FIXED anchor, never at the run's first day: the days of calendar
year Y are computed from data starting on Jan 1 of Y - N (N = FEATURE_HISTORY_YEARS for features,
REGIME_HISTORY_YEARS for regimes). Rolling sums, Wilder averages and the HMM's forward filter then see the
same inputs in the same order whichever run computes the day, so the stored frames are identical bit for bit.

The HMM classifier is refitted per calendar year on the REGIME_HISTORY_YEARS years strictly before Jan 1 of
that year (its training window), then filters forward from the start of that window; a symbol with fewer
than HMM_MIN_TRAINING_BARS training bars is left in warm-up (neutral label) for that year.
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
from emp_pipeline.defs.perception.resources import FredResource, RegimeClassifierResource
from emp_pipeline.defs.publication import StagedCheck, report_then_gate
from emp_pipeline.defs.storage import DatabaseResource, DataLakeResource
from emp_pipeline.domain.regimes import (
    NEUTRAL_LABEL,
    PROBABILITY_COLUMNS,
    REGIME_COLUMNS,
    REGIME_LABELS,
    make_classifier,
)
from emp_pipeline.domain.sensory import (
    FEATURE_COLUMNS,
    MACRO_LOOKBACK_DAYS,
    SensoryCortex,
    empty_features,
    macro_coverage,
)
from emp_pipeline.registry.regimes import upsert_market_regimes
from emp_pipeline.reporting.regime_chart import regime_chart_png

GROUP = "perception"
OWNERS = ["team:research"]
# Features look back 252 bars at most: two years of history also lets the Wilder averages settle, so a
# day's features equal those of a run over the whole history (up to float rounding).
FEATURE_HISTORY_YEARS = 2
# Rules rank volatility over 756 bars (three years); the HMM trains on the five years before each year.
REGIME_HISTORY_YEARS = 5
HMM_MIN_TRAINING_BARS = 252
PROBABILITY_TOLERANCE = 1e-9
MACRO_MARGIN_DAYS = 30
EXAMPLES_SHOWN = 5


def lookback_days(history_years: int) -> int:
    """Calendar days that reach Jan 1 of (year - history_years) from any day of the year (Dec 31 at worst)."""
    return (history_years + 1) * 366


def _lookback_mapping(history_years: int) -> TimeWindowPartitionMapping:
    # Days before the first partition do not exist; the look-back then simply starts at the first one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return TimeWindowPartitionMapping(
            start_offset=-lookback_days(history_years), allow_nonexistent_upstream_partitions=True
        )


def _utc(year: int) -> pd.Timestamp:
    return pd.Timestamp(year=year, month=1, day=1, tz="UTC")


def year_blocks(start: pd.Timestamp, end: pd.Timestamp) -> Iterator[tuple[int, pd.Timestamp, pd.Timestamp]]:
    """(year, first, end) for each calendar year the window [start, end) touches, clipped to the window."""
    last = end - pd.Timedelta(microseconds=1)
    for year in range(start.year, last.year + 1):
        yield year, max(start, _utc(year)), min(end, _utc(year + 1))


def _between(frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    return frame.loc[(frame["date"] >= start) & (frame["date"] < end)]


def compute_features_by_year(
    cortex: SensoryCortex,
    bars: pd.DataFrame,
    macro: pd.DataFrame | None,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> pd.DataFrame:
    """Features of the days in [start, end), each year's days computed from bars since its fixed anchor."""
    pieces = []
    for year, first, block_end in year_blocks(start, end):
        history = _between(bars, _utc(year - FEATURE_HISTORY_YEARS), block_end)
        if history.empty:
            continue
        pieces.append(_between(cortex.compute(history, macro), first, block_end))
    pieces = [piece for piece in pieces if not piece.empty]
    return pd.concat(pieces, ignore_index=True) if pieces else empty_features()


def _neutral_regimes(bars: pd.DataFrame) -> pd.DataFrame:
    """Warm-up rows (neutral label, uniform probabilities) for symbols a classifier could not be fitted on."""
    frame = pd.DataFrame(
        {"date": bars["date"].to_numpy(), "symbol": bars["symbol"].to_numpy(), "regime": NEUTRAL_LABEL}
    )
    for column in PROBABILITY_COLUMNS:
        frame[column] = 1.0 / len(REGIME_LABELS)
    frame["warmup"] = True
    frame["date"] = frame["date"].astype("datetime64[ns, UTC]")
    return frame.loc[:, list(REGIME_COLUMNS)]


def classify_by_year(
    kind: str, bars: pd.DataFrame, features: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """Regimes of the days in [start, end); year Y is fitted on years before Jan 1 of Y (see module doc)."""
    pieces = []
    for year, first, block_end in year_blocks(start, end):
        anchor, training_end = _utc(year - REGIME_HISTORY_YEARS), _utc(year)
        block_bars = _between(bars, anchor, block_end)
        block_features = _between(features, anchor, block_end)
        if block_features.empty:
            continue
        untrained: list[str] = []
        if kind == "hmm":
            training_bars = block_bars.loc[block_bars["date"] < training_end]
            counts = training_bars["symbol"].value_counts()
            untrained = sorted(
                str(symbol)
                for symbol in block_bars["symbol"].unique()
                if counts.get(symbol, 0) < HMM_MIN_TRAINING_BARS
            )
            trained_bars = block_bars.loc[~block_bars["symbol"].isin(untrained)]
            window_bars = _between(block_bars, first, block_end)
            pieces.append(_neutral_regimes(window_bars.loc[window_bars["symbol"].isin(untrained)]))
            if trained_bars.empty:
                continue
            classifier = make_classifier({"kind": kind}).fit(
                training_bars.loc[~training_bars["symbol"].isin(untrained)], None
            )
            labelled = classifier.classify(trained_bars, None)
        else:
            classifier = make_classifier({"kind": kind}).fit(block_bars, block_features)
            labelled = classifier.classify(block_bars, block_features)
        pieces.append(_between(labelled, first, block_end))
    pieces = [piece for piece in pieces if not piece.empty]
    if not pieces:
        return _neutral_regimes(bars.iloc[0:0])
    frame = pd.concat(pieces, ignore_index=True)
    return frame.sort_values(["symbol", "date"], kind="mergesort").reset_index(drop=True)


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
    table = table.map(lambda share: f"{share:.1%}")
    table.insert(0, "days", regimes.groupby("symbol").size().reindex(table.index))
    table["warmup_days"] = regimes.groupby("symbol")["warmup"].sum().reindex(table.index).astype(int)
    return table.reset_index().rename(columns={"index": "symbol"}).to_markdown(index=False)


# ------------------------------------------------------------------------------------------- assets


def sensory_features(
    context: AssetExecutionContext,
    market_bars: pd.DataFrame,
    market_data: MarketDataResource,
    fred: FredResource,
    lake: DataLakeResource,
) -> Iterator:
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
    history_start = _utc(start.year - FEATURE_HISTORY_YEARS)
    macro, macro_source, macro_status = macro_for_features(fred, market_data, history_start, end)
    cortex = SensoryCortex(market_data.universe().instruments)
    features = compute_features_by_year(cortex, market_bars, macro, start, end)

    incomplete = settled_rows_with_nan(features)
    check = StagedCheck(
        "features_complete_after_warmup",
        blocking=True,
        passed=not incomplete.any(),
        description=f"{int(incomplete.sum())} settled rows hold NaN features",
        failures=int(incomplete.sum()),
        examples=tuple(_examples(features, incomplete)),
    )
    yield from report_then_gate(context, "sensory_features", features, [check], lake.base_dir)

    coverage = macro_coverage(features)
    context.add_asset_metadata(
        {
            "macro_coverage": MetadataValue.md(
                pd.DataFrame(
                    {"role": list(coverage), "share_of_bars": [f"{v:.1%}" for v in coverage.values()]}
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


def sensory_features_asset(partitions_def: PartitionsDefinition) -> AssetsDefinition:
    """`sensory_features` over the partitions `build_definitions` made from the settings."""
    return asset(
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="frame_io_manager",
        group_name=GROUP,
        kinds={"pandas", "parquet"},
        owners=OWNERS,
        ins={"market_bars": AssetIn(partition_mapping=_lookback_mapping(FEATURE_HISTORY_YEARS))},
        check_specs=[
            AssetCheckSpec(
                "features_complete_after_warmup",
                asset="sensory_features",
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
    market_bars: pd.DataFrame,
    sensory_features: pd.DataFrame,
    regime_classifier: RegimeClassifierResource,
    database: DatabaseResource,
    lake: DataLakeResource,
) -> Iterator:
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
    kind = regime_classifier.kind
    regimes = classify_by_year(kind, market_bars, sensory_features, start, end)
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
    yield from report_then_gate(context, "market_regimes", regimes, checks, lake.base_dir)

    # Published only now: the registry first, then the Parquet the live job reads (the IO manager writes it
    # when the output is yielded); the materialization event, which the live sensor follows, comes last.
    with database.session() as session:
        upserted = upsert_market_regimes(session, regimes, make_classifier({"kind": kind}).name)
    if not regimes.empty:
        png = regime_chart_png(_between(market_bars, start, end), regimes)
        chart = f"![regimes](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
        # Output metadata is copied onto every partition's event of a range run: the table and the
        # picture go on the newest day only, which is what the UI shows as the latest materialization.
        context.add_asset_metadata(
            {
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


def market_regimes_asset(partitions_def: PartitionsDefinition) -> AssetsDefinition:
    """`market_regimes` over the partitions `build_definitions` made from the settings."""
    return asset(
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="frame_io_manager",
        group_name=GROUP,
        kinds={"pandas", "parquet", "sql"},
        owners=OWNERS,
        ins={
            "market_bars": AssetIn(partition_mapping=_lookback_mapping(REGIME_HISTORY_YEARS)),
            "sensory_features": AssetIn(partition_mapping=_lookback_mapping(REGIME_HISTORY_YEARS)),
        },
        check_specs=[
            AssetCheckSpec(
                "probabilities_sum_to_one",
                asset="market_regimes",
                blocking=True,
                description="the regime probabilities of every row sum to 1 within "
                f"{PROBABILITY_TOLERANCE:g}",
            ),
            AssetCheckSpec(
                "labels_known",
                asset="market_regimes",
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
