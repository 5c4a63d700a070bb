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
same ``panel_signals`` on its history and reads the last row.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import pandas as pd

from emp_pipeline.domain import rule_kernels
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

    @cached_property
    def canonical_json(self) -> str:
        """The leaf as canonical JSON, built once: rules are immutable and shared between a GA's parents
        and children, so ids and the signal caches key on this text without re-encoding whole trees."""
        return _canonical(_rule_to_json(self))


@dataclass(frozen=True)
class RuleGroup:
    """An inner node: ``all`` (AND) or ``any`` (OR) of its children."""

    combinator: str
    rules: tuple[Rule, ...]

    @cached_property
    def canonical_json(self) -> str:
        """``{"all": [...]}`` from the children's cached texts (the same text json.dumps would give)."""
        children = ",".join(child.canonical_json for child in self.rules)
        return f"{{{_canonical(self.combinator)}:[{children}]}}"


Rule = Condition | RuleGroup


@dataclass(frozen=True)
class RiskGenes:
    stop_atr: float
    take_profit_atr: float
    position_fraction: float
    max_holding_bars: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "stop_atr": float(self.stop_atr),
            "take_profit_atr": float(self.take_profit_atr),
            "position_fraction": float(self.position_fraction),
            "max_holding_bars": int(self.max_holding_bars),
        }

    @cached_property
    def canonical_json(self) -> str:
        """Canonical JSON of the genes, built once (children often keep a parent's risk genes)."""
        return _canonical(self.to_dict())


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
    """Validate a rule tree whose root sits at ``depth``; return its number of conditions.

    A tree that passed once remembers its (conditions, height): rules are immutable and GA children share
    most subtrees with their parents, so only new nodes are checked; a remembered tree too deep for where it
    now sits is walked again so the error names the node.
    """
    shape = getattr(rule, "_checked_shape", None)
    if shape is not None and depth + shape[1] - 1 <= MAX_RULE_DEPTH:
        return shape[0]
    conditions, height = _checked_shape(rule, gene, depth)
    object.__setattr__(rule, "_checked_shape", (conditions, height))
    return conditions


def _checked_shape(rule: Rule, gene: str, depth: int) -> tuple[int, int]:
    """(conditions, height) of a valid rule tree; GenomeError naming the first bad node otherwise."""
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
        return 1, 1
    if isinstance(rule, RuleGroup):
        if rule.combinator not in COMBINATORS:
            raise GenomeError(
                f"gene {gene}: combinator {rule.combinator!r} is not one of {list(COMBINATORS)}"
            )
        if len(rule.rules) < 2:
            raise GenomeError(f"gene {gene}.{rule.combinator}: needs at least two children")
        conditions = height = 0
        for index, child in enumerate(rule.rules):
            child_gene = f"{gene}.{rule.combinator}[{index}]"
            conditions += _validate_rule(child, child_gene, depth + 1)
            height = max(height, child._checked_shape[1])
        return conditions, height + 1
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


def rule_conditions(rule: Rule | None) -> int:
    """How many leaf comparisons a rule has (0 for no rule): its complexity."""
    if rule is None:
        return 0
    if isinstance(rule, Condition):
        return 1
    return sum(rule_conditions(child) for child in rule.rules)


def genome_conditions(genome: Genome) -> int:
    return sum(rule_conditions(rule) for rule in (genome.long_entry, genome.short_entry, genome.exit))


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


def _rule_genes(genome: Genome) -> dict[str, Rule | None]:
    return {"long_entry": genome.long_entry, "short_entry": genome.short_entry, "exit": genome.exit}


def genome_to_dict(genome: Genome) -> dict[str, Any]:
    return {
        "version": genome.version,
        "direction": genome.direction,
        "regimes": list(genome.regimes),
        "risk": genome.risk.to_dict(),
        **{gene: _rule_to_json(rule) for gene, rule in _rule_genes(genome).items()},
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


_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
_GENE_KEYS = {
    gene: _CANONICAL_ENCODER.encode(gene)
    for gene in ("version", "direction", "long_entry", "short_entry", "exit", "regimes", "risk")
}


def _canonical(value: Any) -> str:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)``, one encoder reused."""
    return _CANONICAL_ENCODER.encode(value)


def genome_to_json(genome: Genome) -> str:
    """Canonical JSON: sorted keys, no whitespace, shortest float repr; equal genomes give equal text.

    The text of ``genome_to_dict`` encoded with sorted keys, the rules taking their cached texts.
    """
    texts = {
        "version": _hashable_json(genome.version),
        "direction": _hashable_json(genome.direction),
        "regimes": _hashable_json(genome.regimes),
        "risk": genome.risk.canonical_json,
        **{
            gene: "null" if rule is None else rule.canonical_json
            for gene, rule in _rule_genes(genome).items()
        },
    }
    return "{" + ",".join(f"{_GENE_KEYS[gene]}:{texts[gene]}" for gene in sorted(texts)) + "}"


@lru_cache(maxsize=1024)
def _hashable_json(value: int | str | tuple[str, ...]) -> str:
    """Canonical JSON of the few distinct versions, directions and regime sets (a tuple encodes as a list)."""
    return _canonical(value)


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
        return self.values[self.feature_index(name)]

    def feature_index(self, name: str) -> int:
        try:
            return self._index[name]
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

_OP_CODES: dict[str, int] = {
    ">": rule_kernels.OP_GREATER,
    "<": rule_kernels.OP_LESS,
    "crosses_above": rule_kernels.OP_CROSSES_ABOVE,
    "crosses_below": rule_kernels.OP_CROSSES_BELOW,
}
_COMBINATOR_CODES: dict[str, int] = {"all": rule_kernels.PROGRAM_ALL, "any": rule_kernels.PROGRAM_ANY}
# Leaf rows a RuleEvaluator keeps before it starts over (bounds its memory on long panels and long runs).
_MAX_LEAF_BYTES = 256 * 2**20


class RuleEvaluator:
    """Signals of genomes on one panel, with every distinct leaf and rule tree compiled once.

    A GA run keeps one evaluator for its training panel: children share most rules and leaves with their
    parents, so after the first generation only new comparisons are computed and only new trees are turned
    into postfix programs over leaf rows, which one compiled call evaluates with the state machine (see
    ``rule_kernels``). Both caches are keyed by canonical JSON and only save time: results do not depend on
    what was evaluated before.
    """

    def __init__(self, panel: FeaturePanel) -> None:
        self.panel = panel
        self._values = np.ascontiguousarray(panel.values, dtype=np.float64)
        self._n_cells = panel.usable.size
        self._max_rows = max(64, _MAX_LEAF_BYTES // max(self._n_cells, 1))
        self._rows: dict[str, int] = {}
        self._programs: dict[str, tuple[list[int], int]] = {}
        self._leaves = np.empty((min(256, self._max_rows), self._n_cells), dtype=np.bool_)
        # Each cell's regime bit, 0 while warming up or without a regime (code -1, read as 255 unsigned; the
        # shift is masked to 0-7 so none overflows). Built per bar by the live replay, so kept cheap.
        codes = panel.regime_codes.ravel().astype(np.int8, copy=False).view(np.uint8)
        known = panel.usable.ravel() & (codes < len(REGIME_LABELS))
        self._regime_bits = np.left_shift(np.uint8(1), codes & np.uint8(7)) * known

    def _add_leaves(self, leaves: Sequence[Condition]) -> None:
        """Compute the given leaves (distinct, none cached yet) in one call and cache their rows."""
        index = self.panel.feature_index
        lefts = np.array([index(leaf.left) for leaf in leaves], dtype=np.int64)
        rights = np.array(
            [index(leaf.right) if isinstance(leaf.right, str) else -1 for leaf in leaves], np.int64
        )
        thresholds = np.array(
            [0.0 if isinstance(leaf.right, str) else leaf.right for leaf in leaves], np.float64
        )
        first = len(self._rows)
        needed = first + len(leaves)
        if needed > self._leaves.shape[0]:
            grown = np.empty(
                (max(needed, min(2 * self._leaves.shape[0], self._max_rows)), self._n_cells), bool
            )
            grown[:first] = self._leaves[:first]
            self._leaves = grown
        rule_kernels.compute_leaves(
            self._values,
            lefts,
            np.array([_OP_CODES[leaf.op] for leaf in leaves], dtype=np.int8),
            rights,
            thresholds,
            np.arange(first, needed, dtype=np.int64),
            self._leaves,
        )
        for offset, leaf in enumerate(leaves):
            self._rows[leaf.canonical_json] = first + offset

    def _compile(self, rules: Sequence[Rule]) -> None:
        """Programs of the rules not compiled yet, computing their new leaves first (all at once)."""
        pending = self._uncompiled(rules)
        if not pending:
            return
        leaves = self._leaves_of(pending)
        new_leaves = [leaf for key, leaf in leaves.items() if key not in self._rows]
        if len(self._rows) + len(new_leaves) > self._max_rows:
            # Start over rather than grow without bound; programs point at rows, so they go too.
            self._rows.clear()
            self._programs.clear()
            pending = self._uncompiled(rules)
            new_leaves = list(self._leaves_of(pending).values())
        if new_leaves:
            self._add_leaves(new_leaves)
        rows = self._rows
        leaf_op = rule_kernels.PROGRAM_LEAF
        for key, (code, depth) in pending.items():
            flat: list[int] = []
            for op, argument in code:
                flat += (op, rows[argument.canonical_json] if op == leaf_op else argument)
            self._programs[key] = (flat, depth)

    def _uncompiled(self, rules: Sequence[Rule]) -> dict[str, tuple[list[tuple[int, Any]], int]]:
        """Postfix code (leaves still as Conditions) and stack depth of each distinct rule not compiled."""
        pending: dict[str, tuple[list[tuple[int, Any]], int]] = {}
        for rule in rules:
            key = rule.canonical_json
            if key not in self._programs and key not in pending:
                code: list[tuple[int, Any]] = []
                pending[key] = (code, _postfix(rule, code, 0))
        return pending

    @staticmethod
    def _leaves_of(pending: dict[str, tuple[list[tuple[int, Any]], int]]) -> dict[str, Condition]:
        leaf_op = rule_kernels.PROGRAM_LEAF
        return {
            argument.canonical_json: argument
            for code, _ in pending.values()
            for op, argument in code
            if op == leaf_op
        }

    def _program(self, rules: Sequence[Rule | None]) -> tuple[np.ndarray, np.ndarray, int]:
        """One program holding ``rules`` (None = empty), their (start, stop) bounds, the stack they need."""
        self._compile([rule for rule in rules if rule is not None])
        flat: list[int] = []
        edges = [0]
        depth = 0
        for rule in rules:
            if rule is not None:
                code, needed = self._programs[rule.canonical_json]
                flat += code
                depth = max(depth, needed)
            edges.append(len(flat) // 2)
        positions = np.array(edges, dtype=np.int64)
        bounds = np.stack([positions[:-1], positions[1:]], axis=1)
        return np.array(flat, dtype=np.int64).reshape(-1, 2), bounds, depth

    def rule(self, rule: Rule) -> np.ndarray:
        """Boolean (n_bars, n_instruments): where the rule holds at the bar's close (NaN compares false)."""
        program, bounds, depth = self._program([rule])
        scratch = np.empty((depth, self._n_cells), dtype=np.bool_)
        empty = np.zeros(self._n_cells, dtype=np.bool_)
        holds = rule_kernels.run_program(self._leaves, program, bounds[0, 0], bounds[0, 1], scratch, empty)
        return holds.reshape(self.panel.usable.shape).copy()

    def signals(self, genomes: Sequence[Genome]) -> np.ndarray:
        """Signals of many genomes stacked as int8 (n_strategies, n_bars, n_instruments)."""
        slots = [rule for genome in genomes for rule in (genome.long_entry, genome.short_entry, genome.exit)]
        program, bounds, depth = self._program(slots)
        masks = np.array(
            [sum(1 << REGIME_LABELS.index(label) for label in genome.regimes) for genome in genomes],
            dtype=np.int64,
        )
        out = np.empty((len(genomes), *self.panel.usable.shape), dtype=np.int8)
        rule_kernels.population_signal_states(
            self._leaves,
            program,
            bounds.reshape(len(genomes), 3, 2),
            masks,
            self._regime_bits,
            len(self.panel.symbols),
            depth,
            out,
        )
        return out


def _postfix(rule: Rule, code: list[tuple[int, Any]], depth: int) -> int:
    """Append ``rule`` in postfix (leaves as Conditions) with ``depth`` values stacked; return the peak."""
    if isinstance(rule, Condition):
        code.append((rule_kernels.PROGRAM_LEAF, rule))
        return depth + 1
    peak = depth
    for position, child in enumerate(rule.rules):
        peak = max(peak, _postfix(child, code, depth + position))
    code.append((_COMBINATOR_CODES[rule.combinator], len(rule.rules)))
    return peak


def evaluate_rule(rule: Rule, panel: FeaturePanel) -> np.ndarray:
    """Boolean (n_bars, n_instruments): where the rule holds at the bar's close (NaN compares false)."""
    return RuleEvaluator(panel).rule(rule)


def panel_signals(genome: Genome, panel: FeaturePanel) -> np.ndarray:
    """Desired direction per bar, int8 (n_bars, n_instruments): +1 long, -1 short, 0 flat."""
    return RuleEvaluator(panel).signals([genome])[0]


def population_signals(genomes: Sequence[Genome], panel: FeaturePanel) -> np.ndarray:
    """Signals of many genomes stacked as int8 (n_strategies, n_bars, n_instruments): the kernel's input."""
    return RuleEvaluator(panel).signals(genomes)
