"""Genome codec, validation messages, and the signal semantics shared by backtest and live execution."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.domain.genome import (
    Condition,
    Genome,
    GenomeError,
    RiskGenes,
    RuleGroup,
    feature_panel,
    genome_from_json,
    genome_to_json,
    panel_signals,
    strategy_id,
    validate_genome,
)


def _signals(genome: Genome, features: pd.DataFrame, regimes: pd.DataFrame) -> pd.DataFrame:
    """The live engine's signal path (validate, pivot onto the panel, run the rules) per date and symbol."""
    panel = feature_panel(features, regimes)
    return pd.DataFrame(
        panel_signals(validate_genome(genome), panel), index=panel.dates, columns=list(panel.symbols)
    )


def _genome(**changes) -> Genome:
    base = Genome(
        direction="both",
        long_entry=RuleGroup(
            "all", (Condition("what_a", ">", 0.5), Condition("how_b", "crosses_above", "what_a"))
        ),
        short_entry=Condition("what_a", "<", -0.5),
        exit=RuleGroup("any", (Condition("what_a", "crosses_below", 0.0), Condition("how_b", ">", 3.0))),
        regimes=("bull_trend", "range"),
        risk=RiskGenes(stop_atr=2.0, take_profit_atr=4.5, position_fraction=0.5, max_holding_bars=20),
    )
    return replace(base, **changes)


def _frames(
    values: dict[str, list[float]], regimes: list[str] | None = None, warmup: list[bool] | None = None
):
    """One symbol's feature and regime frames with the given columns."""
    n = len(next(iter(values.values())))
    dates = pd.date_range("2021-03-01", periods=n, freq="B", tz="UTC")
    features = pd.DataFrame(
        {"date": dates, "symbol": "X", **{k: np.asarray(v, float) for k, v in values.items()}}
    )
    features["warmup"] = warmup if warmup is not None else [False] * n
    regime_frame = pd.DataFrame({"date": dates, "symbol": "X", "regime": regimes or ["bull_trend"] * n})
    return features, regime_frame


def test_json_round_trip_is_canonical_and_ids_are_stable():
    genome = _genome()
    text = genome_to_json(genome)
    assert genome_from_json(text) == genome
    assert genome_to_json(genome_from_json(text)) == text
    assert json.loads(text)["version"] == 1
    assert strategy_id(genome) == strategy_id(genome_from_json(text))
    assert len(strategy_id(genome)) == 16
    other = replace(genome, risk=replace(genome.risk, stop_atr=2.5))
    assert strategy_id(other) != strategy_id(genome)


@pytest.mark.parametrize(
    ("changes", "gene"),
    [
        ({"direction": "sideways"}, "gene direction"),
        ({"direction": "long"}, "gene short_entry"),
        ({"short_entry": None}, "gene short_entry"),
        ({"regimes": ()}, "gene regimes"),
        ({"regimes": ("bull_trend", "moon")}, "gene regimes"),
        ({"risk": RiskGenes(0.0, 4.0, 0.5, 20)}, "gene risk.stop_atr"),
        ({"risk": RiskGenes(2.0, 4.0, 1.5, 20)}, "gene risk.position_fraction"),
        ({"risk": RiskGenes(2.0, 4.0, 0.5, 0)}, "gene risk.max_holding_bars"),
        ({"risk": RiskGenes(2.0, float("nan"), 0.5, 20)}, "gene risk.take_profit_atr"),
        ({"short_entry": Condition("what_a", "==", 1.0)}, "gene short_entry.op"),
        ({"exit": RuleGroup("any", (Condition("what_a", ">", 1.0),))}, "gene exit.any"),
        (
            {"exit": RuleGroup("xor", (Condition("what_a", ">", 1.0), Condition("how_b", "<", 1.0)))},
            "gene exit",
        ),
        (
            {
                "long_entry": RuleGroup(
                    "all", (Condition("what_a", ">", 0.5), Condition("how_b", ">", "how_b"))
                )
            },
            "gene long_entry.all[1].right",
        ),
    ],
)
def test_invalid_genomes_are_rejected_naming_the_gene(changes, gene):
    with pytest.raises(GenomeError, match=re.escape(gene)):
        validate_genome(_genome(**changes))


def test_decoding_rejects_wrong_shapes_naming_the_gene():
    data = json.loads(genome_to_json(_genome()))
    data["risk"]["max_holding_bars"] = 1.5
    with pytest.raises(GenomeError, match=r"risk\.max_holding_bars"):
        genome_from_json(json.dumps(data))
    data = json.loads(genome_to_json(_genome()))
    data["exit"] = {"left": "what_a", "op": ">"}
    with pytest.raises(GenomeError, match="gene exit"):
        genome_from_json(json.dumps(data))
    with pytest.raises(GenomeError, match="version"):
        genome_from_json(genome_to_json(_genome()).replace('"version":1', '"version":2'))


def test_threshold_entry_state_carries_forward_until_the_exit_rule():
    genome = _genome(
        direction="long",
        long_entry=Condition("what_a", ">", 1.0),
        short_entry=None,
        exit=Condition("what_a", "<", -1.0),
        regimes=("bull_trend",),
    )
    features, regimes = _frames({"what_a": [0.0, 2.0, 0.0, 0.0, -2.0, 0.0, 2.0]})
    signals = _signals(genome, features, regimes)
    assert list(signals["X"]) == [0, 1, 1, 1, 0, 0, 1]


def test_crossovers_need_the_previous_bar_on_the_other_side():
    genome = _genome(
        direction="short",
        long_entry=None,
        short_entry=Condition("what_a", "crosses_below", "what_b"),
        exit=Condition("what_a", "crosses_above", 0.0),
        regimes=("bull_trend",),
    )
    features, regimes = _frames(
        {"what_a": [1.0, 0.5, -1.0, -2.0, -3.0, 1.0, 1.0], "what_b": [0.0, 0.0, 0.0, -2.5, -4.0, 5.0, 5.0]}
    )
    # a < b first happens at bar 2 (cross); at bar 3 a < b still but no new cross; bar 4 a > b again;
    # bar 5 a crosses above 0 -> exit; bar 5 a < b is a new cross, but exit wins on the same bar.
    assert list(_signals(genome, features, regimes)["X"]) == [0, 0, -1, -1, -1, 0, 0]


def test_long_and_short_on_the_same_bar_cancel_and_nan_compares_false():
    genome = _genome(
        long_entry=Condition("what_a", ">", 0.0),
        short_entry=Condition("how_b", ">", 0.0),
        exit=None,
    )
    features, regimes = _frames({"what_a": [1.0, 1.0, np.nan, 0.0], "how_b": [0.0, 1.0, 1.0, np.nan]})
    assert list(_signals(genome, features, regimes)["X"]) == [1, 0, -1, -1]


def test_disallowed_regime_and_warmup_force_flat_and_need_a_fresh_entry():
    genome = _genome(
        direction="long",
        long_entry=Condition("what_a", "crosses_above", 0.0),
        short_entry=None,
        exit=None,
        regimes=("bull_trend",),
    )
    features, regimes = _frames(
        {"what_a": [-1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0]},
        regimes=[
            "bull_trend",
            "bull_trend",
            "bear_trend",
            "bull_trend",
            "bull_trend",
            "bull_trend",
            "bull_trend",
        ],
        warmup=[True, False, False, False, False, False, False],
    )
    # Bar 1 crosses above 0 -> long; bar 2 bear -> flat; back in bull at bar 3 but no new cross -> flat.
    assert list(_signals(genome, features, regimes)["X"]) == [0, 1, 0, 0, 0, 0, 1]


def test_signals_read_features_by_name_and_name_missing_ones():
    genome = _genome(
        direction="long", long_entry=Condition("why_custom_thing", ">", 0.0), short_entry=None, exit=None
    )
    features, regimes = _frames({"why_custom_thing": [1.0, -1.0], "what_a": [0.0, 0.0]})
    assert list(_signals(genome, features, regimes)["X"]) == [1, 1]
    features, regimes = _frames({"what_a": [0.0, 0.0]})
    with pytest.raises(GenomeError, match="why_custom_thing"):
        _signals(genome, features, regimes)


def test_signals_on_truncated_history_equal_the_prefix_of_the_full_history():
    rng = np.random.default_rng(3)
    n = 200
    labels = np.array(["bull_trend", "bear_trend", "range", "high_volatility"])
    features, regimes = _frames(
        {"what_a": rng.normal(size=n).tolist(), "how_b": rng.normal(size=n).tolist()},
        regimes=list(labels[rng.integers(0, 4, n)]),
    )
    genome = _genome()
    full = _signals(genome, features, regimes)
    assert set(np.unique(full["X"])) == {-1, 0, 1}
    for cut in (17, 90, 150):
        live = _signals(genome, features.iloc[:cut], regimes.iloc[:cut])
        pd.testing.assert_frame_equal(live, full.iloc[:cut])


def test_panel_aligns_symbols_on_the_union_of_dates():
    dates = pd.date_range("2021-03-01", periods=3, freq="B", tz="UTC")
    features = pd.DataFrame(
        {
            "date": [dates[0], dates[1], dates[2], dates[1], dates[2]],
            "symbol": ["A", "A", "A", "B", "B"],
            "what_a": [1.0, 2.0, 3.0, 4.0, 5.0],
            "warmup": [False] * 5,
        }
    )
    regimes = features[["date", "symbol"]].assign(regime="range")
    panel = feature_panel(features, regimes)
    assert panel.symbols == ("A", "B") and panel.names == ("what_a",)
    np.testing.assert_array_equal(panel.usable, [[True, False], [True, True], [True, True]])
    assert np.isnan(panel.feature("what_a")[0, 1]) and panel.feature("what_a")[2, 1] == 5.0
    genome = _genome(
        direction="long",
        long_entry=Condition("what_a", ">", 0.0),
        short_entry=None,
        exit=None,
        regimes=("range",),
    )
    np.testing.assert_array_equal(panel_signals(genome, panel), [[1, 0], [1, 1], [1, 1]])


def test_canonical_json_is_the_sorted_json_of_the_dict_for_evolved_genomes():
    from emp_pipeline.domain.evolution import FeatureSpace, crossover, mutate, random_genome
    from emp_pipeline.domain.genome import genome_to_dict
    from emp_pipeline.domain.random_stream import RandomStream

    grid = np.array([-1.5, -0.25, 0.0, 1e-7, 3.5, 12345.678])
    space = FeatureSpace(
        names=("what_a", "how_b", "why_c"),
        thresholds={name: grid for name in ("what_a", "how_b", "why_c")},
        partners={"what_a": ("how_b",), "how_b": ("what_a",), "why_c": ()},
    )
    stream = RandomStream(11)
    genomes = [random_genome(stream, space, 4) for _ in range(40)]
    for _ in range(300):
        genomes.append(mutate(stream, space, crossover(stream, genomes[-1], genomes[-7]), 4))
    for genome in genomes:
        expected = json.dumps(genome_to_dict(genome), sort_keys=True, separators=(",", ":"), allow_nan=False)
        assert genome_to_json(genome) == expected
        assert genome_from_json(expected) == genome


def test_a_validated_subtree_moved_deeper_still_fails_naming_the_node():
    leaf = Condition("what_a", ">", 0.5)
    chain = RuleGroup("all", (leaf, RuleGroup("any", (leaf, Condition("how_b", "<", 1.0)))))
    validate_genome(_genome(exit=chain))  # depth 3: fine, and remembered
    deeper = RuleGroup("all", (Condition("how_b", ">", 0.0), RuleGroup("any", (chain, leaf))))
    with pytest.raises(
        GenomeError, match=re.escape("gene exit.all[1].any[0].all[1].any[0]: rule tree deeper")
    ):
        validate_genome(_genome(exit=deeper))
    too_many = RuleGroup("all", (chain, chain, chain))
    with pytest.raises(GenomeError, match="more than 8 conditions"):
        validate_genome(_genome(exit=too_many))
