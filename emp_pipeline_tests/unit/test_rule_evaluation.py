"""Compiled rule evaluation against a plain per-bar reading of the signal rules.

The reference below walks bars one at a time exactly as the genome module's docstring states the rules,
sharing no arrays with the compiled path; random genomes over random features (with holes, warm-up bars
and disallowed regimes) must give the same signals, whatever the evaluator evaluated before.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from emp_pipeline.domain import genome as genome_module
from emp_pipeline.domain.evolution import FeatureSpace, random_genome
from emp_pipeline.domain.genome import (
    Condition,
    FeaturePanel,
    Genome,
    GenomeError,
    Rule,
    RuleEvaluator,
    RuleGroup,
    evaluate_rule,
    panel_signals,
    population_signals,
)
from emp_pipeline.domain.random_stream import RandomStream
from emp_pipeline.domain.regimes import REGIME_LABELS
from emp_pipeline_tests.feature_panels import random_feature_panel

NAMES = ("what_a", "what_b", "how_c", "why_d")


def _panel(n_bars: int = 120, n_instruments: int = 3, seed: int = 0) -> FeaturePanel:
    return random_feature_panel(NAMES, n_bars, n_instruments, seed, start="2020-01-01")


def _holds(rule: Rule, panel: FeaturePanel, t: int, i: int) -> bool:
    if isinstance(rule, RuleGroup):
        results = [_holds(child, panel, t, i) for child in rule.rules]
        return all(results) if rule.combinator == "all" else any(results)

    def side(bar: int) -> tuple[float, float]:
        left = float(panel.feature(rule.left)[bar, i])
        right = float(panel.feature(rule.right)[bar, i]) if isinstance(rule.right, str) else rule.right
        return left, right

    def compare(left: float, right: float) -> bool:
        above = rule.op in (">", "crosses_above")
        return left > right if above else left < right

    now = compare(*side(t))
    if rule.op in (">", "<"):
        return now
    if t == 0:
        return False
    before = side(t - 1)
    return now and not compare(*before) and not any(math.isnan(value) for value in before)


def _reference_signals(genome: Genome, panel: FeaturePanel) -> np.ndarray:
    n_bars, n_instruments = panel.usable.shape
    allowed_codes = {REGIME_LABELS.index(label) for label in genome.regimes}
    out = np.zeros((n_bars, n_instruments), dtype=np.int8)
    for i in range(n_instruments):
        state = 0
        for t in range(n_bars):
            going_long = genome.long_entry is not None and _holds(genome.long_entry, panel, t, i)
            going_short = genome.short_entry is not None and _holds(genome.short_entry, panel, t, i)
            leaving = genome.exit is not None and _holds(genome.exit, panel, t, i)
            allowed = bool(panel.usable[t, i]) and int(panel.regime_codes[t, i]) in allowed_codes
            if leaving or not allowed or (going_long and going_short):
                state = 0
            elif going_long:
                state = 1
            elif going_short:
                state = -1
            out[t, i] = state
    return out


def _space(panel: FeaturePanel) -> FeatureSpace:
    grid = np.round(np.linspace(-1.5, 1.5, 13), 1)
    return FeatureSpace(
        names=NAMES,
        thresholds={name: grid for name in NAMES},
        partners={name: tuple(other for other in NAMES if other != name) for name in NAMES},
    )


def test_compiled_signals_equal_the_bar_by_bar_reading_of_the_rules():
    panel = _panel()
    stream = RandomStream(4)
    genomes = [random_genome(stream, _space(panel), max_conditions=5) for _ in range(60)]
    expected = np.stack([_reference_signals(genome, panel) for genome in genomes])
    evaluator = RuleEvaluator(panel)
    # In two batches through one evaluator (the second reuses cached leaves and programs), and fresh.
    np.testing.assert_array_equal(evaluator.signals(genomes[:25]), expected[:25])
    np.testing.assert_array_equal(evaluator.signals(genomes), expected)
    np.testing.assert_array_equal(population_signals(genomes, panel), expected)
    np.testing.assert_array_equal(panel_signals(genomes[7], panel), expected[7])
    # A panel whose arrays are views of a larger grid (as a replay cuts them) reads the same.
    wide = np.repeat(panel.values, 2, axis=2)[:, :, ::2]
    assert not wide.flags.c_contiguous
    strided = FeaturePanel(panel.dates, panel.symbols, panel.names, wide, panel.usable, panel.regime_codes)
    np.testing.assert_array_equal(population_signals(genomes, strided), expected)
    assert set(np.unique(expected)) == {-1, 0, 1}


def test_every_leaf_and_group_matches_the_reference_including_crosses_and_holes():
    panel = _panel(n_bars=60, n_instruments=2, seed=3)
    rules: list[Rule] = [
        Condition(left, op, right)
        for left in NAMES[:2]
        for op in (">", "<", "crosses_above", "crosses_below")
        for right in (0.0, "how_c")
    ]
    rules.append(RuleGroup("any", (RuleGroup("all", tuple(rules[:3])), rules[5], rules[9])))
    for rule in rules:
        expected = np.array([[_holds(rule, panel, t, i) for i in range(2)] for t in range(60)])
        np.testing.assert_array_equal(evaluate_rule(rule, panel), expected, err_msg=str(rule))


def test_an_evaluator_that_runs_out_of_room_starts_over_with_the_same_results(monkeypatch):
    panel = _panel(n_bars=80, n_instruments=2, seed=5)
    genomes = [random_genome(RandomStream(seed), _space(panel), max_conditions=4) for seed in range(40)]
    expected = population_signals(genomes, panel)
    # Room for 64 leaf rows only: the 40 genomes need more, so the cache is cleared between batches.
    monkeypatch.setattr(genome_module, "_MAX_LEAF_BYTES", 64 * panel.usable.size)
    evaluator = RuleEvaluator(panel)
    batches = [evaluator.signals(genomes[start : start + 8]) for start in range(0, 40, 8)]
    np.testing.assert_array_equal(np.concatenate(batches), expected)
    # A batch mixing rules compiled before the reset with new ones that force it.
    mixed = [genomes[35], *genomes[:10]]
    np.testing.assert_array_equal(evaluator.signals(mixed), expected[[35, *range(10)]])


def test_an_unknown_feature_is_named_and_leaves_the_evaluator_usable():
    panel = _panel()
    evaluator = RuleEvaluator(panel)
    with pytest.raises(GenomeError, match="why_missing"):
        evaluator.rule(Condition("why_missing", ">", 0.0))
    np.testing.assert_array_equal(
        evaluator.rule(Condition("what_a", ">", 0.0)), panel.feature("what_a") > 0.0
    )
