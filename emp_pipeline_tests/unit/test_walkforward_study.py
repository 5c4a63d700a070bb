"""The walk-forward study's arithmetic: seeds, lineage to record, OOS metrics, the honest curve, the PBO."""

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.domain.backtest import PopulationResult
from emp_pipeline.domain.baselines import PeriodBaselines
from emp_pipeline.domain.evolution import EvolutionResult, StrategyRecord
from emp_pipeline.domain.genome import Condition, Genome, RiskGenes
from emp_pipeline.domain.metrics import (
    expected_maximum_sharpe,
    probabilistic_sharpe_ratio,
    return_kurtosis,
    return_skewness,
)
from emp_pipeline.domain.walkforward_study import (
    SearchTrials,
    StudyInputError,
    deflation_metrics,
    lineage_closure,
    out_of_sample_metrics,
    period_comparisons,
    period_frame,
    period_seed,
    search_trials,
    selected_curve,
    stitched_baselines,
    study_overfitting,
    trial_matrix,
    usable_blocks,
)

GENOME = Genome(
    version=1,
    direction="long",
    long_entry=Condition("what_rsi_14", "<", 30.0),
    short_entry=None,
    exit=None,
    regimes=("range",),
    risk=RiskGenes(stop_atr=2.0, take_profit_atr=3.0, position_fraction=0.5, max_holding_bars=10),
)


def _record(identity: str, generation: int, parents: tuple[str, ...] = (), fitness: float = 0.0):
    return StrategyRecord(
        identity, parents, generation, "mutation" if parents else "random", fitness, GENOME, {}
    )


def test_period_seeds_are_fixed_by_seed_and_period_and_fit_a_signed_int32():
    assert period_seed(7, "2010-01") == period_seed(7, "2010-01")
    seeds = {period_seed(seed, key) for seed in (7, 8) for key in ("2010-01", "2010-02", "2010-03")}
    assert len(seeds) == 6
    assert all(0 <= seed < 2**31 for seed in seeds)


def test_lineage_closure_keeps_survivors_and_their_ancestors_parents_first():
    records = (
        _record("a", 0),
        _record("b", 0),
        _record("dead_end", 0),
        _record("c", 1, ("a", "b")),
        _record("d", 1, ("b",)),
        _record("e", 2, ("c",)),
    )
    final = (_record("e", 2, ("c",), fitness=2.0), _record("d", 1, ("b",), fitness=1.0))
    result = EvolutionResult(records=records, final_population=final, history=(), seed=1)
    lineage = lineage_closure(result)
    assert [r.strategy_id for r in lineage] == ["a", "b", "c", "d", "e"]
    assert next(r for r in lineage if r.strategy_id == "e").fitness == 2.0
    seen: set[str] = set()
    for record in lineage:
        assert set(record.parent_ids) <= seen
        seen.add(record.strategy_id)


def _population(returns: np.ndarray, trades: list[int], wins: list[int], profit, loss) -> PopulationResult:
    n = returns.shape[0]
    return PopulationResult(
        equity=np.cumprod(1.0 + returns, axis=1),
        returns=returns,
        instrument_equity=None,
        trade_counts=np.array(trades),
        winning_trades=np.array(wins),
        gross_profit=np.array(profit, dtype=float),
        gross_loss=np.array(loss, dtype=float),
        exposure=np.full(n, 0.5),
        turnover=np.full(n, 4.0),
        fees=np.full(n, 0.01),
        spread_costs=np.full(n, 0.02),
        swap_costs=np.full(n, -0.003),
    )


def test_out_of_sample_metrics_use_registry_names_and_stay_json_safe():
    rng = np.random.default_rng(3)
    returns = rng.normal(0.001, 0.01, size=(3, 20))
    returns[2] = 0.0
    trials = SearchTrials(count=9_000, sharpe_variance=0.05**2)
    rows = out_of_sample_metrics(_population(returns, [4, 2, 0], [3, 2, 0], [5, 3, 0], [1, 0, 0]), trials)
    first, no_losses, idle = rows
    for name in ("sharpe", "volatility", "sortino", "calmar", "max_drawdown_days", "deflated_sharpe"):
        assert name in first
    assert first["trade_count"] == 4 and first["win_rate"] == 0.75 and first["profit_factor"] == 5.0
    assert first["turnover"] == pytest.approx(4.0 / 20)
    assert 0.0 <= first["deflated_sharpe"] <= 1.0 and first["dsr_trials"] == 9_000
    assert no_losses["profit_factor"] is None  # infinite: JSON has no infinity
    assert idle["win_rate"] is None and idle["sharpe"] == 0.0 and idle["trade_count"] == 0
    assert first["total_return"] == pytest.approx(np.prod(1.0 + returns[0]) - 1.0)
    # The kernel's cost totals, each on its own (a credited swap is a negative cost).
    assert (first["fee_cost"], first["spread_cost"], first["swap_cost"]) == (0.01, 0.02, -0.003)


def test_a_ruined_strategy_loses_everything_once_then_nothing():
    returns = np.array([[0.01, -1.0, np.nan, np.nan], [0.0, 0.01, -0.01, 0.0]])
    trials = SearchTrials(count=2, sharpe_variance=0.01)
    (ruined, _) = out_of_sample_metrics(_population(returns, [1, 1], [0, 1], [0, 1], [1, 0]), trials)
    assert ruined["total_return"] == pytest.approx(-1.0)
    assert ruined["max_drawdown"] == pytest.approx(-1.0)


def _oos(periods: dict[str, pd.DatetimeIndex], n_ranks: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for period, dates in periods.items():
        for rank in range(n_ranks):
            for date in dates:
                rows.append((date, period, rank, f"{period}-s{rank}", float(rng.normal(0.0, 0.01))))
    return pd.DataFrame(rows, columns=["date", "period", "rank", "strategy_id", "return"])


PERIODS = {
    "2010-01": pd.bdate_range("2010-01-04", "2010-01-29", tz="UTC"),
    "2010-02": pd.bdate_range("2010-02-01", "2010-02-26", tz="UTC"),
}


def test_the_honest_curve_chains_each_periods_rank_zero_strategy():
    oos = _oos(PERIODS, n_ranks=4).sample(frac=1.0, random_state=1)  # any row order
    curve = selected_curve(oos)
    chosen = oos.loc[oos["rank"] == 0].sort_values("date")
    assert list(curve["strategy_id"].unique()) == ["2010-01-s0", "2010-02-s0"]
    np.testing.assert_allclose(curve["equity"], np.cumprod(1.0 + chosen["return"].to_numpy()))
    peak = np.maximum.accumulate(np.maximum(curve["equity"].to_numpy(), 1.0))
    np.testing.assert_allclose(curve["drawdown"], curve["equity"] / peak - 1.0)
    assert str(curve["date"].dtype) == "datetime64[ns, UTC]"


def test_overlapping_periods_and_missing_columns_are_refused():
    oos = _oos(PERIODS, n_ranks=2)
    doubled = pd.concat([oos, oos.assign(period="again")])
    with pytest.raises(StudyInputError, match="periods overlap"):
        selected_curve(doubled)
    with pytest.raises(StudyInputError, match="missing columns"):
        trial_matrix(oos.drop(columns="rank"))


def test_the_trial_matrix_keeps_ranks_every_period_has():
    oos = _oos(PERIODS, n_ranks=5)
    oos = oos.loc[~((oos["period"] == "2010-02") & (oos["rank"] == 4))]
    matrix = trial_matrix(oos)
    assert list(matrix.columns) == [0, 1, 2, 3]
    assert len(matrix) == sum(len(dates) for dates in PERIODS.values())


def test_cscv_blocks_fit_the_study_length():
    assert usable_blocks(40, 16) == 16
    assert usable_blocks(21, 16) == 10
    assert usable_blocks(7, 16) == 2
    assert usable_blocks(3, 16) == 0


def test_pbo_is_high_for_noise_and_low_when_one_rank_is_persistently_better():
    noise = trial_matrix(_oos(PERIODS, n_ranks=10, seed=5))
    assert 0.0 <= study_overfitting(noise).pbo <= 1.0
    skilled = noise.copy()
    skilled[0] = skilled[0] + 0.01
    assert study_overfitting(skilled).pbo < 0.1
    assert study_overfitting(noise.iloc[:3]) is None
    assert study_overfitting(noise[[0]]) is None


def _scored(identity: str, sharpe: float) -> StrategyRecord:
    return StrategyRecord(identity, (), 0, "random", sharpe, GENOME, {"sharpe": sharpe})


def test_the_trials_are_every_candidate_the_search_evaluated_with_their_sharpe_spread():
    sharpes = [0.5, -1.2, 2.0, 0.0, 0.7]
    records = tuple(_scored(f"s{k}", value) for k, value in enumerate(sharpes))
    result = EvolutionResult(records=records, final_population=records[:2], history=(), seed=0)
    trials = search_trials(result, periods_per_year=252)
    assert trials.count == 5  # all generations, not the final population of 2
    assert trials.sharpe_variance == pytest.approx(np.var(np.array(sharpes) / np.sqrt(252), ddof=1))
    assert trials.expected_maximum_sharpe == pytest.approx(
        expected_maximum_sharpe(np.sqrt(trials.sharpe_variance), 5)
    )


def test_more_trials_deflate_the_same_track_more_and_need_a_longer_record():
    rng = np.random.default_rng(12)
    track = rng.normal(0.002, 0.01, 250)
    few = deflation_metrics(track, SearchTrials(count=40, sharpe_variance=0.03**2))
    many = deflation_metrics(track, SearchTrials(count=10_000, sharpe_variance=0.03**2))
    assert many["dsr_trials"] == 10_000 and few["dsr_trials"] == 40
    assert many["deflated_sharpe"] < few["deflated_sharpe"]
    assert many["min_track_record_bars"] > few["min_track_record_bars"]
    # By hand: PSR against the hurdle, with the track's own moments.
    hurdle = expected_maximum_sharpe(0.03, 10_000)
    observed = track.mean() / track.std(ddof=1)
    assert many["deflated_sharpe"] == pytest.approx(
        probabilistic_sharpe_ratio(observed, hurdle, 250, return_skewness(track), return_kurtosis(track))
    )
    losing = deflation_metrics(-np.abs(track), SearchTrials(count=10_000, sharpe_variance=0.03**2))
    assert losing["min_track_record_bars"] is None and losing["deflated_sharpe"] < 0.01


def _study_with_baselines(n_null: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    frames = []
    for period, dates in PERIODS.items():
        n = len(dates)
        strategies = rng.normal(0.0, 0.01, (3, n))
        strategies[0] = 0.004 + rng.normal(0.0, 0.0005, n)  # the pick gains every bar
        baselines = PeriodBaselines(
            buy_and_hold=np.full(n, 0.001),
            null_returns=rng.normal(0.0, 0.01, (n_null, n)),
            null_sharpes=np.zeros(n_null),
            spa=None,
        )
        frames.append(
            period_frame(
                period, dates, np.arange(3), [f"{period}-s{k}" for k in range(3)], strategies, baselines
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_baseline_rows_ride_along_without_entering_the_curve_or_the_trials():
    oos = _study_with_baselines()
    assert set(oos["series"]) == {"strategy", "buy_and_hold", "null"}
    curve = selected_curve(oos)
    assert set(curve["strategy_id"]) == {"2010-01-s0", "2010-02-s0"}
    assert list(trial_matrix(oos).columns) == [0, 1, 2]
    # Frames stored before baselines were kept (no series column) still read as strategies.
    legacy = oos.loc[oos["series"] == "strategy"].drop(columns="series")
    pd.testing.assert_frame_equal(selected_curve(legacy), curve)


def test_the_pick_is_compared_with_buy_and_hold_and_the_null_per_period_and_stitched():
    oos = _study_with_baselines()
    curve = selected_curve(oos)
    table = period_comparisons(oos, curve)
    assert list(table["period"]) == ["2010-01", "2010-02"]
    n_bars = len(PERIODS["2010-01"])
    assert table["buy_and_hold_return"].iloc[0] == pytest.approx(1.001**n_bars - 1.0)
    # A pick that gains every bar has an enormous Sharpe: above every random genome.
    assert (table["null_percentile"] == 100.0).all()
    assert table["null_p_value"].iloc[0] == pytest.approx(1 / 51)
    stitched = stitched_baselines(oos, curve)
    assert stitched is not None and stitched.null_sharpes.shape == (50,)
    assert stitched.pick_against_null.percentile == 100.0
    assert len(stitched.buy_and_hold) == len(curve)
    legacy = oos.loc[oos["series"] == "strategy"]
    assert stitched_baselines(legacy, curve) is None
