"""The plain-notation rules say exactly what the kernel does.

Round trip: the printed lines of random genomes are parsed back here (with their own tiny grammar, sharing
nothing with the genome module) and evaluated bar by bar on a small panel with holes, warm-up bars and
unknown regimes; the signals must equal the compiled evaluator's.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from emp_pipeline.domain.evolution import FeatureSpace, random_genome
from emp_pipeline.domain.genome import (
    Condition,
    FeaturePanel,
    Genome,
    RiskGenes,
    RuleGroup,
    panel_signals,
)
from emp_pipeline.domain.random_stream import RandomStream
from emp_pipeline.domain.regimes import REGIME_LABELS
from emp_pipeline.domain.rule_text import risk_text, rule_text, strategy_lines, strategy_text
from emp_pipeline_tests.feature_panels import random_feature_panel

NAMES = ("what_a", "what_b", "how_c")
TOKEN = re.compile(
    r"\s*(\(|\)|\{[^}]*\}|crosses above|crosses below|not in|in\b|and\b|or\b|<|>"
    r"|-?\d[\d.e+-]*|[a-z_][a-z0-9_]*)"
)


def _panel(n_bars: int = 80, n_instruments: int = 2, seed: int = 11) -> FeaturePanel:
    return random_feature_panel(NAMES, n_bars, n_instruments, seed, start="2021-01-01")


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        match = TOKEN.match(text, position)
        assert match is not None, f"cannot read {text[position:]!r}"
        tokens.append(match.group(1))
        position = match.end()
    return tokens


class _TextRule:
    """A rule read back from its text, evaluated on (bar, instrument) of a panel."""

    def __init__(self, tokens: list[str], panel: FeaturePanel) -> None:
        self.tokens, self.panel = tokens, panel

    def holds(self, t: int, i: int) -> bool:
        self.position = 0
        value = self._expression(t, i)
        assert self.position == len(self.tokens), self.tokens[self.position :]
        return value

    def _next(self) -> str:
        self.position += 1
        return self.tokens[self.position - 1]

    def _expression(self, t: int, i: int) -> bool:
        values = [self._term(t, i)]
        joiners = set()
        while self.position < len(self.tokens) and self.tokens[self.position] in ("and", "or"):
            joiners.add(self._next())
            values.append(self._term(t, i))
        assert len(joiners) <= 1, "and/or mixed without brackets"
        return all(values) if joiners != {"or"} else any(values)

    def _term(self, t: int, i: int) -> bool:
        token = self._next()
        if token == "(":
            value = self._expression(t, i)
            assert self._next() == ")"
            return value
        if token == "regime":
            negated = self._next() == "not in"
            labels = {label.strip() for label in self._next().strip("{}").split(",")}
            code = int(self.panel.regime_codes[t, i])
            inside = bool(self.panel.usable[t, i]) and code >= 0 and REGIME_LABELS[code] in labels
            return not inside if negated else inside
        op, right = self._next(), self._next()

        def side(bar: int) -> tuple[float, float]:
            other = self.panel.feature(right)[bar, i] if right in NAMES else float(right)
            return float(self.panel.feature(token)[bar, i]), float(other)

        def compare(left: float, other: float) -> bool:
            return left > other if op in (">", "crosses above") else left < other

        now = compare(*side(t))
        if op in ("<", ">"):
            return now
        if t == 0:
            return False
        before = side(t - 1)
        return now and not compare(*before) and not any(math.isnan(value) for value in before)


def _signals_from_text(lines: tuple[str, ...], panel: FeaturePanel) -> np.ndarray:
    """The state machine as the module docstring states it, driven by the parsed lines only."""
    events = {}
    for line in lines:
        event, _, rest = line.partition(" when ")
        events[event] = _TextRule(_tokens(rest), panel)
    n_bars, n_instruments = panel.usable.shape
    out = np.zeros((n_bars, n_instruments), dtype=np.int8)
    for i in range(n_instruments):
        state = 0
        for t in range(n_bars):
            fired = {event: rule.holds(t, i) for event, rule in events.items()}
            warm = bool(panel.usable[t, i]) and int(panel.regime_codes[t, i]) >= 0
            if fired.get("exit") or not warm or (fired.get("long") and fired.get("short")):
                state = 0
            elif fired.get("long"):
                state = 1
            elif fired.get("short"):
                state = -1
            out[t, i] = state
    return out


def _space() -> FeatureSpace:
    grid = np.round(np.linspace(-1.5, 1.5, 13), 1)
    return FeatureSpace(
        names=NAMES,
        thresholds={name: grid for name in NAMES},
        partners={name: tuple(other for other in NAMES if other != name) for name in NAMES},
    )


def test_printed_rules_read_back_give_the_kernels_signals():
    panel = _panel()
    stream = RandomStream(21)
    genomes = [random_genome(stream, _space(), max_conditions=5) for _ in range(40)]
    everything = [g for g in genomes if set(g.regimes) == set(REGIME_LABELS)]
    assert everything and len(everything) < len(genomes), "both regime-clause cases are exercised"
    for genome in genomes:
        lines = strategy_lines(genome)
        np.testing.assert_array_equal(
            _signals_from_text(lines, panel), panel_signals(genome, panel), err_msg="\n".join(lines)
        )


def _genome(**changes: object) -> Genome:
    fields = {
        "direction": "long",
        "long_entry": RuleGroup(
            "all", (Condition("rsi_14", "<", 30.5), RuleGroup("any", (Condition("a", ">", "b"),) * 2))
        ),
        "short_entry": None,
        "exit": Condition("rsi_14", "crosses_above", 70.0),
        "regimes": ("bull_trend",),
        "risk": RiskGenes(stop_atr=2.0, take_profit_atr=4.5, position_fraction=0.25, max_holding_bars=20),
    }
    fields.update(changes)
    return Genome(**fields)


def test_text_names_every_gene_in_the_documented_notation():
    genome = _genome()
    assert strategy_lines(genome) == (
        "long when rsi_14 < 30.5 and (a > b or a > b) and regime in {bull_trend}",
        "exit when rsi_14 crosses above 70.0 or regime not in {bull_trend}",
    )
    assert strategy_text(genome) == "; ".join(strategy_lines(genome))
    assert risk_text(genome) == "stop 2 ATR, take profit 4.5 ATR, size 25% of equity, hold <= 20 bars"
    # Every regime allowed and no exit rule: no regime clause and no exit line.
    free = _genome(regimes=REGIME_LABELS, exit=None)
    assert strategy_lines(free) == ("long when rsi_14 < 30.5 and (a > b or a > b)",)


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        (Condition("x", "crosses_below", -0.000123456), "x crosses below -0.000123456"),
        (Condition("x", ">", 1e-07), "x > 1e-07"),
        (RuleGroup("any", (Condition("x", "<", 1.0), Condition("y", ">", "x"))), "x < 1.0 or y > x"),
    ],
)
def test_thresholds_print_exactly(rule, text):
    assert rule_text(rule) == text
    if isinstance(rule, Condition):
        assert float(text.rsplit(" ", 1)[1]) == rule.right


def test_an_or_entry_under_a_regime_clause_keeps_its_brackets():
    entry = RuleGroup("any", (Condition("a", "<", 1.0), Condition("b", ">", 2.0)))
    exit_rule = RuleGroup("all", (Condition("a", ">", 3.0), Condition("b", "<", 0.0)))
    lines = strategy_lines(_genome(long_entry=entry, exit=exit_rule, regimes=("range", "bear_trend")))
    assert lines == (
        "long when (a < 1.0 or b > 2.0) and regime in {bear_trend, range}",
        "exit when (a > 3.0 and b < 0.0) or regime not in {bear_trend, range}",
    )
