"""Look-ahead analysis of one genome: do its features, regimes, rules and signals change when the future goes?

Every value a strategy acts on at bar t must be a function of bars up to t. The test is direct: compute the
features (and regimes) on the full data, then again on the data cut at K seeded random bars; for each cut t,
every value at a bar <= t must be identical in both (exact equality, NaN equal to NaN). A feature normalised
over the whole frame, a column holding the next bar's return, or a regime model fitted on later bars all fail
it. The analysis names each culprit with the first bar and symbol where the two computations part:

* ``feature`` findings: a column the genome reads (or the ATR the kernel sizes stops with) differs;
* ``regime`` / ``warmup`` findings: the regime labels or the warm-up flags differ;
* ``rule`` findings: a leaf of a rule tree, by path (``long_entry.all[1]``), evaluates differently;
* ``signal`` findings: the desired direction per bar differs.

The calendar goes with the future: each cut is computed with exchange calendars as known at the cut bar
(`calendars.calendar_known_at`), so a feature that reads an ad-hoc closure before it was announced is a
``feature`` finding like any other leak.

The feature and regime computations are injectable, so a test can point the analysis at any implementation;
the gates pass the ones the perception assets run (`anchored_perception.window_features`/`window_regimes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from emp_pipeline.domain.anchored_perception import window_regimes
from emp_pipeline.domain.calendars import calendar_known_at
from emp_pipeline.domain.genome import (
    Condition,
    FeaturePanel,
    Genome,
    Rule,
    evaluate_rule,
    feature_panel,
    genome_features,
    panel_signals,
    rule_features,
    validate_genome,
)
from emp_pipeline.domain.regimes import REGIME_LABELS, RegimeConfig
from emp_pipeline.domain.study_windows import StudyWindows
from emp_pipeline.domain.timeframes import EXCHANGE_DAYS_PER_YEAR

FeatureFunction = Callable[[pd.DataFrame], pd.DataFrame]
RegimeFunction = Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]
ATR_COLUMN = "what_atr_14"
DEFAULT_CUTS = 8


class LookaheadInputError(ValueError):
    """The bars or the window cannot be analysed (too few bars, no cut point possible)."""


# The default classifier, computed exactly as the market_regimes asset computes it (year-anchored), with
# the windows of daily exchange bars; a gate judging another timeframe passes its own `window_regimes`.
default_regimes: RegimeFunction = window_regimes(RegimeConfig().kind, StudyWindows(EXCHANGE_DAYS_PER_YEAR))


def rule_leaves(genome: Genome) -> Iterator[tuple[str, Condition]]:
    """Every leaf condition with its path: ``long_entry``, ``exit.any[0]``, ``long_entry.all[1].any[0]``."""

    def walk(rule: Rule, path: str) -> Iterator[tuple[str, Condition]]:
        if isinstance(rule, Condition):
            yield path, rule
            return
        for index, child in enumerate(rule.rules):
            yield from walk(child, f"{path}.{rule.combinator}[{index}]")

    genes = (("long_entry", genome.long_entry), ("short_entry", genome.short_entry), ("exit", genome.exit))
    for gene, rule in genes:
        if rule is not None:
            yield from walk(rule, gene)


@dataclass(frozen=True)
class LookaheadFinding:
    """Where one feature, rule or the signals first differ between the full and the cut computation."""

    kind: str  # "feature", "warmup", "regime", "rule" or "signal"
    name: str  # the column, the rule path, "regime", "warmup" or "signals"
    cut: pd.Timestamp  # the last bar of the cut data that revealed it
    date: pd.Timestamp  # the first bar whose value differs
    symbol: str
    full_value: object
    cut_value: object
    reads: tuple[str, ...] = ()  # for a rule: the features it reads

    def describe(self) -> str:
        reads = f" (reads {', '.join(self.reads)})" if self.reads else ""
        return (
            f"{self.kind} {self.name}{reads}: at {self.date.date()} {self.symbol} the full data gives "
            f"{self.full_value!r} but data cut at {self.cut.date()} gives {self.cut_value!r}"
        )


@dataclass(frozen=True)
class LookaheadReport:
    cuts: tuple[pd.Timestamp, ...]
    features_checked: tuple[str, ...]
    rules_checked: tuple[str, ...]
    findings: tuple[LookaheadFinding, ...]

    @property
    def passed(self) -> bool:
        return not self.findings

    @property
    def culprits(self) -> tuple[str, ...]:
        """Names of everything that looked ahead (features, rule paths, ``regime``, ``signals``)."""
        return tuple(finding.name for finding in self.findings)

    def describe(self) -> str:
        head = (
            f"look-ahead analysis over {len(self.cuts)} cut points, {len(self.features_checked)} features, "
            f"{len(self.rules_checked)} rule leaves: "
        )
        if self.passed:
            return head + "no value changed when later bars were removed"
        return head + f"{len(self.findings)} finding(s)\n" + "\n".join(f.describe() for f in self.findings)


def cut_points(
    dates: Sequence[pd.Timestamp] | pd.DatetimeIndex,
    n_cuts: int,
    seed: int,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> tuple[pd.Timestamp, ...]:
    """K distinct seeded bars in [start, end) to cut after, never the last bar (nothing is after it)."""
    index = pd.DatetimeIndex(sorted(pd.unique(pd.DatetimeIndex(dates))))
    candidates = index[:-1]
    if start is not None:
        candidates = candidates[candidates >= start]
    if end is not None:
        candidates = candidates[candidates < end]
    if len(candidates) == 0:
        raise LookaheadInputError(
            f"no bar to cut at between {start} and {end} (data has {len(index)} bars): widen the window"
        )
    if n_cuts < 1:
        raise LookaheadInputError(f"n_cuts must be >= 1, got {n_cuts}")
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(candidates), size=min(n_cuts, len(candidates)), replace=False)
    return tuple(candidates[np.sort(picked)])


def _first_difference(full: np.ndarray, cut: np.ndarray, rows: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of the first difference on the given rows, NaN equal to NaN; None when identical."""
    a, b = full[rows], cut[rows]
    floats = a.dtype.kind == "f" or b.dtype.kind == "f"
    same = (a == b) | (np.isnan(a) & np.isnan(b)) if floats else a == b
    where = np.argwhere(~same)
    if len(where) == 0:
        return None
    return int(rows[where[0][0]]), int(where[0][1])


def _value(array: np.ndarray, row: int, column: int) -> object:
    value = array[row, column]
    return value.item() if isinstance(value, np.generic) else value


def compare_panels(
    genome: Genome,
    full: FeaturePanel,
    cut: FeaturePanel,
    cut_at: pd.Timestamp,
    start: pd.Timestamp | None = None,
    feature_names: Sequence[str] | None = None,
) -> list[LookaheadFinding]:
    """Findings for one cut: the full panel's rows up to ``cut_at`` against the cut panel (same symbols)."""
    n_rows = int(np.searchsorted(full.dates, cut_at, side="right"))
    if len(cut.dates) != n_rows or not (cut.dates == full.dates[:n_rows]).all():
        raise LookaheadInputError(
            f"data cut at {cut_at} has {len(cut.dates)} bars but the full data has {n_rows} up to it: the "
            "feature function must keep one row per input bar"
        )
    rows = np.arange(n_rows)
    if start is not None:
        rows = rows[full.dates[:n_rows] >= start]
    if len(rows) == 0:
        return []
    full_rows = slice(0, n_rows)
    findings: list[LookaheadFinding] = []

    def add(kind: str, name: str, a: np.ndarray, b: np.ndarray, reads: tuple[str, ...] = ()) -> None:
        first = _first_difference(a[full_rows], b, rows)
        if first is not None:
            row, column = first
            findings.append(
                LookaheadFinding(
                    kind=kind,
                    name=name,
                    cut=cut_at,
                    date=full.dates[row],
                    symbol=full.symbols[column],
                    full_value=_value(a, row, column),
                    cut_value=_value(b, row, column),
                    reads=reads,
                )
            )

    names = feature_names if feature_names is not None else sorted(genome_features(genome))
    for name in names:
        add("feature", name, full.feature(name), cut.feature(name))
    add("warmup", "warmup", ~full.usable, ~cut.usable)
    labels = np.asarray((*REGIME_LABELS, "none"), dtype=object)
    add("regime", "regime", labels[full.regime_codes], labels[cut.regime_codes])
    for path, leaf in rule_leaves(genome):
        reads = tuple(sorted(rule_features(leaf)))
        add("rule", path, evaluate_rule(leaf, full), evaluate_rule(leaf, cut), reads)
    add("signal", "signals", panel_signals(genome, full), panel_signals(genome, cut))
    return findings


def analyse_lookahead(
    genome: Genome,
    bars: pd.DataFrame,
    compute_features: FeatureFunction,
    compute_regimes: RegimeFunction = default_regimes,
    *,
    n_cuts: int = DEFAULT_CUTS,
    seed: int = 0,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> LookaheadReport:
    """Compare the genome's inputs and signals on the full bars and on bars cut at ``n_cuts`` seeded points.

    Cut points are drawn from the bars in [start, end) (the whole data when None); values are compared on
    bars from ``start`` up to each cut. One finding per culprit is kept: the earliest differing bar over all
    cuts (so a report names each feature or rule once).
    """
    validate_genome(genome)
    full_features = compute_features(bars)
    symbols = tuple(sorted(full_features["symbol"].astype(str).unique()))
    full = feature_panel(full_features, compute_regimes(bars, full_features), symbols)
    checked = sorted(genome_features(genome) | ({ATR_COLUMN} if ATR_COLUMN in full.names else set()))
    cuts = cut_points(full.dates, n_cuts, seed, start, end)
    earliest: dict[tuple[str, str], LookaheadFinding] = {}
    for cut_at in cuts:
        cut_bars = bars.loc[bars["date"] <= cut_at].reset_index(drop=True)
        with calendar_known_at(cut_at):  # the future goes, and so do closures announced after the cut
            cut_features = compute_features(cut_bars)
            cut = feature_panel(cut_features, compute_regimes(cut_bars, cut_features), symbols)
        for finding in compare_panels(genome, full, cut, cut_at, start, checked):
            key = (finding.kind, finding.name)
            if key not in earliest or finding.date < earliest[key].date:
                earliest[key] = finding
    order = {"feature": 0, "warmup": 1, "regime": 2, "rule": 3, "signal": 4}
    findings = sorted(earliest.values(), key=lambda f: (order[f.kind], f.date, f.name))
    return LookaheadReport(
        cuts=cuts,
        features_checked=tuple(checked),
        rules_checked=tuple(path for path, _ in rule_leaves(genome)),
        findings=tuple(findings),
    )
