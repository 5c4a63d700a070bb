"""Probability of backtest overfitting by CSCV: a hand-checked case, a brute-force cross-check, and the
behaviour on pure noise and on one genuinely better trial."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from emp_pipeline.domain.overfitting import OverfittingInputError, probability_of_backtest_overfitting


def _column_sharpes(rows: np.ndarray) -> np.ndarray:
    """Annualised Sharpe per column, written independently of the module under test."""
    mean = rows.mean(axis=0)
    std = rows.std(axis=0, ddof=1)
    return np.where(std > 0, mean / np.where(std > 0, std, 1.0), 0.0) * math.sqrt(252)


def _brute_force_logits(matrix: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    blocks = np.array_split(np.arange(matrix.shape[0]), n_blocks)
    logits, selected = [], []
    for chosen in combinations(range(n_blocks), n_blocks // 2):
        in_rows = np.concatenate([blocks[b] for b in chosen])
        out_rows = np.concatenate([blocks[b] for b in range(n_blocks) if b not in chosen])
        best = int(np.argmax(_column_sharpes(matrix[in_rows])))
        out = _column_sharpes(matrix[out_rows])
        rank = 1 + sum(value < out[best] for value in out)  # 1 = worst out of sample
        w = rank / (matrix.shape[1] + 1)
        logits.append(math.log(w / (1 - w)))
        selected.append(best)
    return np.array(logits), np.array(selected)


def test_hand_checked_two_block_example() -> None:
    # Two blocks of two periods; within a block every trial has the same spread (+/-0.01 around its mean),
    # so Sharpe order is mean order. Block 0 means: trial 0 > 1 > 2 > 3 (0.04, 0.03, 0.02, 0.01);
    # block 1 means: trial 1 > 2 > 0 > 3 (0.04, 0.03, 0.02, 0.01 for 1, 2, 0, 3).
    matrix = np.array(
        [
            [0.05, 0.04, 0.03, 0.02],
            [0.03, 0.02, 0.01, 0.00],
            [0.03, 0.05, 0.04, 0.02],
            [0.01, 0.03, 0.02, 0.00],
        ]
    )
    result = probability_of_backtest_overfitting(matrix, n_blocks=2, periods_per_year=1)
    # In-sample block 0 picks trial 0, which ranks 2nd of 4 from the bottom in block 1: w = 2/5.
    # In-sample block 1 picks trial 1, which ranks 3rd from the bottom in block 0: w = 3/5.
    assert result.n_combinations == 2
    assert result.selected_trials.tolist() == [0, 1]
    assert result.logits == pytest.approx([math.log(2 / 3), math.log(3 / 2)])
    assert result.pbo == 0.5
    spread = math.sqrt(2 * 0.01**2)  # sample std of (m + 0.01, m - 0.01)
    assert result.in_sample_performance == pytest.approx([0.04 / spread, 0.04 / spread])
    assert result.out_of_sample_performance == pytest.approx([0.02 / spread, 0.03 / spread])
    assert result.probability_out_of_sample_loss == 0.0
    assert math.isnan(result.degradation_slope)  # both winners had the same in-sample Sharpe: no fit


def test_matches_a_brute_force_implementation() -> None:
    rng = np.random.default_rng(3)
    matrix = rng.normal(0.0002, 0.01, size=(125, 7))  # 125 rows: blocks of unequal size (21 and 20)
    result = probability_of_backtest_overfitting(matrix, n_blocks=6)
    logits, selected = _brute_force_logits(matrix, 6)
    assert result.n_combinations == math.comb(6, 3) == 20
    assert result.selected_trials.tolist() == selected.tolist()
    assert result.logits == pytest.approx(logits, rel=1e-9)
    assert result.pbo == pytest.approx(np.mean(logits <= 0))


def test_a_custom_metric_gives_the_same_answer_as_the_fast_sharpe_path() -> None:
    matrix = np.random.default_rng(5).normal(0.0, 0.01, size=(200, 9))
    fast = probability_of_backtest_overfitting(matrix, n_blocks=8)
    custom = probability_of_backtest_overfitting(matrix, n_blocks=8, metric=_column_sharpes)
    assert custom.selected_trials.tolist() == fast.selected_trials.tolist()
    assert custom.logits == pytest.approx(fast.logits)
    assert custom.in_sample_performance == pytest.approx(fast.in_sample_performance, rel=1e-9)
    # A different metric changes the selections: total return picks differently from Sharpe somewhere.
    by_total = probability_of_backtest_overfitting(matrix, n_blocks=8, metric=lambda rows: rows.sum(axis=0))
    assert 0.0 <= by_total.pbo <= 1.0 and by_total.n_combinations == 70


def test_pure_noise_overfits_about_half_the_time() -> None:
    # One noise matrix gives a PBO anywhere in 0.1-0.9 (the combinations share data), so average over many.
    pbos = [
        probability_of_backtest_overfitting(np.random.default_rng(seed).normal(0, 0.01, (480, 20)), 8).pbo
        for seed in range(40)
    ]
    assert 0.4 < float(np.mean(pbos)) < 0.6


def test_one_genuinely_better_trial_is_not_overfit() -> None:
    rng = np.random.default_rng(9)
    matrix = rng.normal(0.0, 0.01, size=(1000, 30))
    matrix[:, 12] += 0.004  # annualised Sharpe around 6: the best everywhere
    result = probability_of_backtest_overfitting(matrix, n_blocks=10)
    assert result.pbo == 0.0
    assert set(result.selected_trials.tolist()) == {12}
    assert result.logits == pytest.approx(np.full(result.n_combinations, math.log(30)))  # rank N of N
    assert result.probability_out_of_sample_loss == 0.0


def test_full_size_study_is_deterministic() -> None:
    matrix = np.random.default_rng(1).normal(0.0, 0.01, size=(2500, 200))
    first = probability_of_backtest_overfitting(matrix, n_blocks=16)
    second = probability_of_backtest_overfitting(matrix, n_blocks=16)
    assert first.n_combinations == 12870
    assert np.array_equal(first.logits, second.logits)
    assert first.summary() == second.summary()
    assert first.summary()["pbo"] == first.pbo


@pytest.mark.parametrize(
    ("matrix", "n_blocks", "message"),
    [
        (np.zeros((40, 3)), 5, "even"),
        (np.zeros((40, 3)), 0, "even"),
        (np.zeros((10, 3)), 8, "blocks of at least 2"),
        (np.zeros((40, 1)), 4, "at least 2"),
        (np.zeros(40), 4, "2-d"),
    ],
)
def test_invalid_settings_are_rejected(matrix: np.ndarray, n_blocks: int, message: str) -> None:
    with pytest.raises(OverfittingInputError, match=message):
        probability_of_backtest_overfitting(matrix, n_blocks=n_blocks)


def test_nan_is_rejected_with_its_position() -> None:
    matrix = np.zeros((40, 3))
    matrix[17, 2] = np.nan
    with pytest.raises(OverfittingInputError, match="period 17, trial 2"):
        probability_of_backtest_overfitting(matrix, n_blocks=4)


def test_a_metric_returning_the_wrong_shape_is_rejected() -> None:
    with pytest.raises(OverfittingInputError, match="3 finite values"):
        probability_of_backtest_overfitting(np.ones((40, 3)), n_blocks=4, metric=lambda rows: rows.sum())
