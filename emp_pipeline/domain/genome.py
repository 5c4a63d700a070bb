"""Strategy genome: what an evolved strategy is, how it is stored, and how it turns features into signals.

A genome is a versioned, JSON-serialisable value:

* ``long_entry`` / ``short_entry`` / ``exit``: rule trees over sensory features. A leaf compares a feature
  (``left``) with a threshold (a JSON number) or with another feature (a JSON string) using ``>``, ``<``,
  ``crosses_above`` or ``crosses_below`` (a cross needs the comparison false on the previous bar and true on
  this one). Inner nodes combine children with ``all`` (AND) or ``any`` (OR).
* ``direction``: ``long`` (needs ``long_entry``), ``short`` (needs ``short_entry``) or ``both`` (needs both).
* ``regimes``: the regimes the strategy may hold a position in.
* ``risk``: ATR-multiple stop and take profit, position size as a fraction of sleeve equity, maximum
  bars held.

Signals are the *desired direction* per bar (+1 long, -1 short, 0 flat), decided at the bar's close: an entry
event sets the state, the exit rule (or a disallowed regime, or features still warming up) resets it to flat,
and the state carries forward between events. Exit wins over entry on the same bar; long and short entries on
the same bar cancel to flat. The state at bar t depends only on bars <= t, so the live engine calls the very
same ``genome_signals`` on its history and reads the last row.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from emp_pipeline.domain.regimes import REGIME_LABELS

GENOME_VERSION = 1
COMPARISON_OPS: tuple[str, ...] = (">", "<", "crosses_above", "crosses_below")
COMBINATORS: tuple[str, ...] = ("all", "any")
DIRECTIONS: tuple[str, ...] = ("long", "short", "both")
MAX_RULE_DEPTH = 4
MAX_RULE_CONDITIONS = 8

# Inclusive bounds of the risk genes; the GA samples inside them and validation enforces them.
STOP_ATR_BOUNDS = (0.25, 10.0)
TAKE_PROFIT_ATR_BOUNDS = (0.25, 20.0)
POSITION_FRACTION_BOUNDS = (0.01, 1.0)
MAX_HOLDING_BOUNDS = (1, 500)


class GenomeError(ValueError):
    """A genome is malformed or out of bounds; the message names the offending gene."""


@dataclass(frozen=True)
class Condition:
    """A leaf: ``left op right`` where ``right`` is a threshold (float) or another feature's name (str)."""

    left: str
    op: str
    right: float | str


@dataclass(frozen=True)
class RuleGroup:
    """An inner node: ``all`` (AND) or ``any`` (OR) of its children."""

    combinator: str
    rules: tuple[Rule, ...]


Rule = Condition | RuleGroup


@dataclass(frozen=True)
class RiskGenes:
    stop_atr: float
    take_profit_atr: float
    position_fraction: float
    max_holding_bars: int


@dataclass(frozen=True)
class Genome:
    direction: str
    long_entry: Rule | None
    short_entry: Rule | None
    exit: Rule | None
    regimes: tuple[str, ...]
    risk: RiskGenes
    version: int = GENOME_VERSION


# --------------------------------------------------------------------------------------------- validation


def _validate_rule(rule: Rule, gene: str, depth: int) -> int:
    """Validate a rule tree; return its number of conditions."""
    if depth > MAX_RULE_DEPTH:
        raise GenomeError(f"gene {gene}: rule tree deeper than {MAX_RULE_DEPTH} levels")
    if isinstance(rule, Condition):
        if not isinstance(rule.left, str) or not rule.left:
            raise GenomeError(f"gene {gene}.left: must be a feature name, got {rule.left!r}")
        if rule.op not in COMPARISON_OPS:
            raise GenomeError(f"gene {gene}.op: {rule.op!r} is not one of {list(COMPARISON_OPS)}")
        if isinstance(rule.right, str):
            if not rule.right:
                raise GenomeError(f"gene {gene}.right: empty feature name")
            if rule.right == rule.left:
                raise GenomeError(f"gene {gene}.right: compares feature {rule.left!r} with itself")
        elif isinstance(rule.right, bool) or not isinstance(rule.right, int | float):
            raise GenomeError(f"gene {gene}.right: must be a number or a feature name, got {rule.right!r}")
        elif not math.isfinite(rule.right):
            raise GenomeError(f"gene {gene}.right: threshold must be finite, got {rule.right!r}")
        return 1
    if isinstance(rule, RuleGroup):
        if rule.combinator not in COMBINATORS:
            raise GenomeError(
                f"gene {gene}: combinator {rule.combinator!r} is not one of {list(COMBINATORS)}"
            )
        if len(rule.rules) < 2:
            raise GenomeError(f"gene {gene}.{rule.combinator}: needs at least two children")
        return sum(
            _validate_rule(child, f"{gene}.{rule.combinator}[{index}]", depth + 1)
            for index, child in enumerate(rule.rules)
        )
    raise GenomeError(f"gene {gene}: expected a Condition or RuleGroup, got {type(rule).__name__}")


def _check_bounds(gene: str, value: float, bounds: tuple[float, float]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GenomeError(f"gene {gene}: must be a finite number, got {value!r}")
    if not bounds[0] <= value <= bounds[1]:
        raise GenomeError(f"gene {gene}: {value!r} is outside [{bounds[0]}, {bounds[1]}]")


def validate_genome(genome: Genome) -> Genome:
    """Raise GenomeError naming the first bad gene; return the genome unchanged when it is valid."""
    if genome.version != GENOME_VERSION:
        raise GenomeError(f"gene version: {genome.version!r} is not the supported version {GENOME_VERSION}")
    if genome.direction not in DIRECTIONS:
        raise GenomeError(f"gene direction: {genome.direction!r} is not one of {list(DIRECTIONS)}")
    needs_long = genome.direction in ("long", "both")
    needs_short = genome.direction in ("short", "both")
    for gene, rule, needed in (
        ("long_entry", genome.long_entry, needs_long),
        ("short_entry", genome.short_entry, needs_short),
    ):
        if needed and rule is None:
            raise GenomeError(f"gene {gene}: required when direction is {genome.direction!r}")
        if not needed and rule is not None:
            raise GenomeError(f"gene {gene}: must be null when direction is {genome.direction!r}")
    for gene, rule in (
        ("long_entry", genome.long_entry),
        ("short_entry", genome.short_entry),
        ("exit", genome.exit),
    ):
        if rule is not None and _validate_rule(rule, gene, 1) > MAX_RULE_CONDITIONS:
            raise GenomeError(f"gene {gene}: more than {MAX_RULE_CONDITIONS} conditions")
    if not genome.regimes:
        raise GenomeError("gene regimes: must allow at least one regime")
    unknown = [label for label in genome.regimes if label not in REGIME_LABELS]
    if unknown:
        raise GenomeError(
            f"gene regimes: unknown labels {unknown}; expected a subset of {list(REGIME_LABELS)}"
        )
    if len(set(genome.regimes)) != len(genome.regimes):
        raise GenomeError(f"gene regimes: duplicate labels in {list(genome.regimes)}")
    risk = genome.risk
    _check_bounds("risk.stop_atr", risk.stop_atr, STOP_ATR_BOUNDS)
    _check_bounds("risk.take_profit_atr", risk.take_profit_atr, TAKE_PROFIT_ATR_BOUNDS)
    _check_bounds("risk.position_fraction", risk.position_fraction, POSITION_FRACTION_BOUNDS)
    if isinstance(risk.max_holding_bars, bool) or not isinstance(risk.max_holding_bars, int | np.integer):
        raise GenomeError(f"gene risk.max_holding_bars: must be an integer, got {risk.max_holding_bars!r}")
    _check_bounds("risk.max_holding_bars", risk.max_holding_bars, MAX_HOLDING_BOUNDS)
    return genome


def rule_features(rule: Rule | None) -> set[str]:
    """Every feature name a rule reads."""
    if rule is None:
        return set()
    if isinstance(rule, Condition):
        return {rule.left} | ({rule.right} if isinstance(rule.right, str) else set())
    return set().union(*(rule_features(child) for child in rule.rules))


def genome_features(genome: Genome) -> set[str]:
    return rule_features(genome.long_entry) | rule_features(genome.short_entry) | rule_features(genome.exit)


# ------------------------------------------------------------------------------------------- JSON codec


def _rule_to_json(rule: Rule | None) -> Any:
    if rule is None:
        return None
    if isinstance(rule, Condition):
        right = rule.right if isinstance(rule.right, str) else float(rule.right)
        return {"left": rule.left, "op": rule.op, "right": right}
    return {rule.combinator: [_rule_to_json(child) for child in rule.rules]}


def _rule_from_json(data: Any, gene: str) -> Rule | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise GenomeError(f"gene {gene}: expected an object, got {data!r}")
    if set(data) == {"left", "op", "right"}:
        right = data["right"]
        if isinstance(right, int) and not isinstance(right, bool):
            right = float(right)
        return Condition(left=data["left"], op=data["op"], right=right)
    if len(data) == 1:
        ((combinator, children),) = data.items()
        if combinator not in COMBINATORS or not isinstance(children, list):
            raise GenomeError(f"gene {gene}: expected {{'all'|'any': [...]}}, got {dict(data)!r}")
        return RuleGroup(
            combinator=combinator,
            rules=tuple(
                _rule_from_json(child, f"{gene}.{combinator}[{i}]") for i, child in enumerate(children)
            ),
        )
    raise GenomeError(
        f"gene {gene}: expected a condition {{left, op, right}} or a group, got keys {sorted(data)}"
    )


def genome_to_dict(genome: Genome) -> dict[str, Any]:
    risk = genome.risk
    return {
        "version": genome.version,
        "direction": genome.direction,
        "long_entry": _rule_to_json(genome.long_entry),
        "short_entry": _rule_to_json(genome.short_entry),
        "exit": _rule_to_json(genome.exit),
        "regimes": list(genome.regimes),
        "risk": {
            "stop_atr": float(risk.stop_atr),
            "take_profit_atr": float(risk.take_profit_atr),
            "position_fraction": float(risk.position_fraction),
            "max_holding_bars": int(risk.max_holding_bars),
        },
    }


def genome_from_dict(data: Mapping[str, Any]) -> Genome:
    """Decode and validate; a wrong shape or value raises GenomeError naming the gene."""
    expected = {"version", "direction", "long_entry", "short_entry", "exit", "regimes", "risk"}
    if not isinstance(data, Mapping) or set(data) != expected:
        keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise GenomeError(f"genome: expected keys {sorted(expected)}, got {keys}")
    if data["version"] != GENOME_VERSION:
        raise GenomeError(f"gene version: {data['version']!r} is not the supported version {GENOME_VERSION}")
    risk = data["risk"]
    risk_keys = {"stop_atr", "take_profit_atr", "position_fraction", "max_holding_bars"}
    if not isinstance(risk, Mapping) or set(risk) != risk_keys:
        raise GenomeError(f"gene risk: expected keys {sorted(risk_keys)}, got {risk!r}")
    if not isinstance(data["regimes"], list):
        raise GenomeError(f"gene regimes: expected a list, got {data['regimes']!r}")
    genome = Genome(
        version=data["version"],
        direction=data["direction"],
        long_entry=_rule_from_json(data["long_entry"], "long_entry"),
        short_entry=_rule_from_json(data["short_entry"], "short_entry"),
        exit=_rule_from_json(data["exit"], "exit"),
        regimes=tuple(data["regimes"]),
        risk=RiskGenes(
            stop_atr=risk["stop_atr"],
            take_profit_atr=risk["take_profit_atr"],
            position_fraction=risk["position_fraction"],
            max_holding_bars=risk["max_holding_bars"],
        ),
    )
    return validate_genome(genome)


def genome_to_json(genome: Genome) -> str:
    """Canonical JSON: sorted keys, no whitespace, shortest float repr; equal genomes give equal text."""
    return json.dumps(genome_to_dict(genome), sort_keys=True, separators=(",", ":"), allow_nan=False)


def genome_from_json(text: str) -> Genome:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise GenomeError(f"genome: not valid JSON ({error})") from error
    return genome_from_dict(data)


def strategy_id(genome: Genome) -> str:
    """A stable identity: the first 16 hex digits of the SHA-256 of the canonical JSON."""
    return hashlib.sha256(genome_to_json(genome).encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------------------------- feature panel


@dataclass(frozen=True)
class FeaturePanel:
    """Features and regimes as dense arrays on one (date x symbol) grid, built once and read by name.

    ``values[k]`` is feature ``names[k]`` with shape (n_bars, n_instruments); ``usable`` is False where a
    bar is missing for a symbol or its features are still warming up; ``regime_codes`` index REGIME_LABELS
    (-1 = none).
    """

    dates: pd.DatetimeIndex
    symbols: tuple[str, ...]
    names: tuple[str, ...]
    values: np.ndarray
    usable: np.ndarray
    regime_codes: np.ndarray

    def feature(self, name: str) -> np.ndarray:
        try:
            return self.values[self._index[name]]
        except KeyError:
            raise GenomeError(
                f"feature {name!r} is not in the feature frame; it has {list(self.names)}"
            ) from None

    @cached_property
    def _index(self) -> dict[str, int]:
        return {name: k for k, name in enumerate(self.names)}

    def window(self, start: pd.Timestamp | None, end: pd.Timestamp | None) -> FeaturePanel:
        """Bars with start <= date < end (either bound may be None)."""
        mask = np.ones(len(self.dates), dtype=bool)
        if start is not None:
            mask &= self.dates >= start
        if end is not None:
            mask &= self.dates < end
        return FeaturePanel(
            dates=self.dates[mask],
            symbols=self.symbols,
            names=self.names,
            values=np.ascontiguousarray(self.values[:, mask, :]),
            usable=self.usable[mask],
            regime_codes=self.regime_codes[mask],
        )


def feature_columns(features: pd.DataFrame) -> tuple[str, ...]:
    """The float feature columns of a sensory frame (everything but the keys and the warmup flag)."""
    return tuple(
        column
        for column in features.columns
        if column not in ("date", "symbol", "warmup") and pd.api.types.is_float_dtype(features[column])
    )


def feature_panel(
    features: pd.DataFrame,
    regimes: pd.DataFrame,
    symbols: Sequence[str] | None = None,
) -> FeaturePanel:
    """Pivot the long feature and regime frames onto one date x symbol grid (union of dates)."""
    for frame, label, needed in (
        (features, "features", ("date", "symbol", "warmup")),
        (regimes, "regimes", ("date", "symbol", "regime")),
    ):
        missing = [column for column in needed if column not in frame.columns]
        if missing:
            raise GenomeError(f"{label} frame is missing columns {missing}")
    names = feature_columns(features)
    symbols = tuple(symbols) if symbols is not None else tuple(sorted(features["symbol"].unique()))
    dates = pd.DatetimeIndex(sorted(features["date"].unique()))
    index = pd.MultiIndex.from_product([dates, symbols], names=["date", "symbol"])
    keyed = features.set_index(["date", "symbol"]).reindex(index)
    n_bars, n_instruments = len(dates), len(symbols)
    values = np.empty((len(names), n_bars, n_instruments), dtype=np.float64)
    for k, name in enumerate(names):
        values[k] = keyed[name].to_numpy(dtype=np.float64, na_value=np.nan).reshape(n_bars, n_instruments)
    warmup = (
        keyed["warmup"].astype("boolean").fillna(True).to_numpy(dtype=bool).reshape(n_bars, n_instruments)
    )
    regime_index = regimes.set_index(["date", "symbol"])["regime"].reindex(index)
    code_of = {label: code for code, label in enumerate(REGIME_LABELS)}
    codes = regime_index.map(code_of).fillna(-1).to_numpy(dtype=np.int8).reshape(n_bars, n_instruments)
    return FeaturePanel(
        dates=dates,
        symbols=symbols,
        names=names,
        values=values,
        usable=~warmup,
        regime_codes=codes,
    )


# ---------------------------------------------------------------------------------------------- signals


def _compare(left: np.ndarray, right: np.ndarray | float, op: str) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        if op == ">":
            return left > right
        if op == "<":
            return left < right
        now = left > right if op == "crosses_above" else left < right
    before = np.zeros_like(now)
    before[1:] = now[:-1]
    # A cross needs the comparison defined (not NaN) and false on the previous bar.
    previous_defined = np.zeros_like(now)
    left_before = left[:-1]
    right_before = right[:-1] if isinstance(right, np.ndarray) else right
    previous_defined[1:] = ~(np.isnan(left_before) | np.isnan(right_before))
    return now & ~before & previous_defined


def evaluate_rule(rule: Rule, panel: FeaturePanel) -> np.ndarray:
    """Boolean (n_bars, n_instruments): where the rule holds at the bar's close (NaN compares false)."""
    if isinstance(rule, Condition):
        right = panel.feature(rule.right) if isinstance(rule.right, str) else float(rule.right)
        return _compare(panel.feature(rule.left), right, rule.op)
    results = [evaluate_rule(child, panel) for child in rule.rules]
    combine = np.logical_and if rule.combinator == "all" else np.logical_or
    out = results[0].copy()
    for result in results[1:]:
        combine(out, result, out=out)
    return out


def panel_signals(genome: Genome, panel: FeaturePanel) -> np.ndarray:
    """Desired direction per bar, int8 (n_bars, n_instruments): +1 long, -1 short, 0 flat."""
    n_bars, n_instruments = panel.usable.shape
    shape = (n_bars, n_instruments)
    long_event = (
        evaluate_rule(genome.long_entry, panel) if genome.long_entry is not None else np.zeros(shape, bool)
    )
    short_event = (
        evaluate_rule(genome.short_entry, panel) if genome.short_entry is not None else np.zeros(shape, bool)
    )
    flat_event = evaluate_rule(genome.exit, panel) if genome.exit is not None else np.zeros(shape, bool)
    allowed = np.isin(panel.regime_codes, [REGIME_LABELS.index(label) for label in genome.regimes])
    flat_event |= ~(allowed & panel.usable) | (long_event & short_event)
    # Row 0 of the padded values is the flat state before any event; event rows are shifted by one.
    event_value = np.zeros((n_bars + 1, n_instruments), dtype=np.int8)
    event_value[1:] = np.where(flat_event, 0, np.where(long_event, 1, -1))
    has_event = flat_event | long_event | short_event
    last_event = np.where(has_event, np.arange(1, n_bars + 1)[:, None], 0)
    np.maximum.accumulate(last_event, axis=0, out=last_event)
    return np.take_along_axis(event_value, last_event, axis=0)


def population_signals(genomes: Sequence[Genome], panel: FeaturePanel) -> np.ndarray:
    """Signals of many genomes stacked as int8 (n_strategies, n_bars, n_instruments): the kernel's input."""
    out = np.empty((len(genomes), *panel.usable.shape), dtype=np.int8)
    for k, genome in enumerate(genomes):
        out[k] = panel_signals(genome, panel)
    return out


def genome_signals(genome: Genome, features: pd.DataFrame, regimes: pd.DataFrame) -> pd.DataFrame:
    """Desired direction per (date, symbol) from the long feature and regime frames.

    This is the one signal function: the backtest stacks it over a population and the live engine calls it
    on its history and acts on the last row.
    """
    validate_genome(genome)
    panel = feature_panel(features, regimes)
    return pd.DataFrame(panel_signals(genome, panel), index=panel.dates, columns=list(panel.symbols))
