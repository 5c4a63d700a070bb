"""Performance metrics: hand-computed values, edge cases, population vectorisation, PSR/DSR."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from emp_pipeline.domain.metrics import (
    ZERO_VOLATILITY_TOLERANCE,
    MetricsInputError,
    annualised_volatilities,
    cagrs,
    calmar_ratios,
    deflated_sharpe_ratio,
    equity_curves,
    expected_maximum_sharpe,
    exposures,
    max_drawdown_durations,
    max_drawdowns,
    minimum_track_record_length,
    normal_cdf,
    normal_ppf,
    performance_metrics,
    population_deflated_sharpe,
    probabilistic_sharpe_ratio,
    profit_factors,
    return_kurtosis,
    return_skewness,
    return_statistics,
    sharpe_ratios,
    sortino_ratios,
    total_returns,
    trade_statistics,
    turnovers,
    win_rates,
)

RETURNS = [0.10, -0.05, 0.02, -0.10, 0.05]


def test_hand_computed_metrics_of_a_short_series() -> None:
    metrics = performance_metrics(RETURNS, periods_per_year=252)

    equity = [1.1, 1.1 * 0.95, 1.1 * 0.95 * 1.02, 1.1 * 0.95 * 1.02 * 0.9, 1.1 * 0.95 * 1.02 * 0.9 * 1.05]
    total = equity[-1] - 1.0
    cagr = (1.0 + total) ** (252 / 5) - 1.0
    drawdown = equity[3] / 1.1 - 1.0  # deepest point (bar 4) against the bar-1 peak
    sharpe = statistics.mean(RETURNS) / statistics.stdev(RETURNS) * math.sqrt(252)
    downside = math.sqrt((0.05**2 + 0.10**2) / 5)  # over all five bars, not just the two losers
    assert metrics.n_bars == 5
    assert metrics.total_return == pytest.approx(total, rel=1e-12)
    assert metrics.cagr == pytest.approx(cagr, rel=1e-12)
    assert metrics.annualised_volatility == pytest.approx(statistics.stdev(RETURNS) * math.sqrt(252))
    assert metrics.sharpe_ratio == pytest.approx(sharpe, rel=1e-12)
    assert metrics.sortino_ratio == pytest.approx(statistics.mean(RETURNS) / downside * math.sqrt(252))
    assert metrics.max_drawdown == pytest.approx(drawdown, rel=1e-12)
    assert metrics.max_drawdown_duration == 4  # peak at bar 1, still under water at bar 5
    assert metrics.calmar_ratio == pytest.approx(cagr / abs(drawdown), rel=1e-12)
    assert metrics.trade_count is None and metrics.exposure is None and metrics.turnover is None


def test_risk_free_rate_is_compounded_to_a_per_bar_rate() -> None:
    per_bar = 1.05 ** (1 / 252) - 1.0
    excess = [r - per_bar for r in RETURNS]
    expected = statistics.mean(excess) / statistics.stdev(excess) * math.sqrt(252)
    assert float(sharpe_ratios(RETURNS, risk_free_rate=0.05)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("returns", "duration", "depth"),
    [
        ([0.0, -0.5, 1.0, 0.1], 2, -0.5),  # peak at bar 1, recovered exactly at bar 3
        ([-0.1, 0.2, -0.01, 0.0, 0.0], 3, -0.1),  # a 2-bar first-bar loss, then 3 bars under water to the end
        ([-0.1, 1.0 / 0.9 - 1.0, 0.0], 2, -0.1),  # recovery equal to the peak up to rounding counts
        ([0.01, 0.02, 0.0], 0, 0.0),
    ],
)
def test_drawdown_depth_and_duration(returns: list[float], duration: int, depth: float) -> None:
    assert int(max_drawdown_durations(returns)) == duration
    assert float(max_drawdowns(returns)) == pytest.approx(depth, abs=1e-12)


def test_all_zero_returns_give_zeros_without_floating_point_warnings() -> None:
    with np.errstate(all="raise"):
        metrics = performance_metrics(np.zeros(50), trade_returns=[], positions=np.zeros(50))
    assert metrics.as_dict() == {
        "n_bars": 50,
        "total_return": 0.0,
        "cagr": 0.0,
        "annualised_volatility": 0.0,
        "sharpe_ratio": 0.0,
        "sortino_ratio": 0.0,
        "calmar_ratio": 0.0,
        "max_drawdown": 0.0,
        "max_drawdown_duration": 0,
        "trade_count": 0,
        "win_rate": 0.0,
        "profit_factor": 0.0,
        "exposure": 0.0,
        "turnover": 0.0,
    }


def test_constant_returns_have_no_sharpe_even_with_rounding_noise_in_the_std() -> None:
    returns = np.full(1000, 0.1)
    assert returns.std(ddof=1) > 0  # numpy's std of a constant 0.1 is not exactly zero...
    with np.errstate(all="raise"):
        metrics = performance_metrics(returns)
    assert metrics.sharpe_ratio == 0.0  # ...but it must not become a Sharpe of 1e16
    assert metrics.sortino_ratio == 0.0  # no bar below the target: undefined, reported 0.0
    assert metrics.calmar_ratio == 0.0  # no drawdown
    assert metrics.cagr == pytest.approx(1.1**252 - 1.0, rel=1e-9)


def test_constant_losses_have_zero_sharpe_but_a_defined_sortino_and_full_drawdown() -> None:
    metrics = performance_metrics(np.full(100, -0.001))
    assert metrics.sharpe_ratio == 0.0
    assert metrics.sortino_ratio == pytest.approx(-math.sqrt(252))  # mean -0.001 over downside dev 0.001
    assert metrics.max_drawdown == pytest.approx(0.999**100 - 1.0)
    assert metrics.max_drawdown_duration == 100


def test_all_losing_series_and_trades() -> None:
    returns = [-0.01, -0.03, -0.02, -0.005]
    metrics = performance_metrics(returns, trade_returns=[-0.02, -0.04], positions=[1, 1, 1, 1])
    assert metrics.sharpe_ratio < 0 and math.isfinite(metrics.sharpe_ratio)
    assert metrics.sortino_ratio < 0
    assert metrics.max_drawdown == pytest.approx(metrics.total_return)
    assert metrics.max_drawdown_duration == 4
    assert metrics.calmar_ratio < 0
    assert (metrics.trade_count, metrics.win_rate, metrics.profit_factor) == (2, 0.0, 0.0)
    assert metrics.exposure == 1.0 and metrics.turnover == pytest.approx(0.25)


def test_a_wiped_out_account() -> None:
    with np.errstate(all="raise"):
        metrics = performance_metrics([0.1, -1.0, 0.0])
    assert metrics.total_return == -1.0 and metrics.cagr == -1.0
    assert metrics.max_drawdown == -1.0 and metrics.calmar_ratio == -1.0


@pytest.mark.parametrize("bar_return", [0.01, -0.02])
def test_a_single_bar(bar_return: float) -> None:
    with np.errstate(all="raise"):
        metrics = performance_metrics([bar_return])
    assert metrics.total_return == pytest.approx(bar_return)
    assert metrics.cagr == pytest.approx((1 + bar_return) ** 252 - 1)
    assert (metrics.annualised_volatility, metrics.sharpe_ratio, metrics.sortino_ratio) == (0.0, 0.0, 0.0)
    assert metrics.max_drawdown == pytest.approx(min(bar_return, 0.0))
    assert metrics.max_drawdown_duration == (1 if bar_return < 0 else 0)


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        ([0.01, float("nan"), 0.02], "NaN"),
        ([0.01, float("inf")], "NaN or infinite"),
        ([0.01, -1.5], "below -100%"),
        ([], "no bars"),
        (np.zeros((2, 2, 2)), "1-d"),
        (["a", "b"], "numeric"),
    ],
)
def test_malformed_returns_are_rejected(returns: object, message: str) -> None:
    with pytest.raises(MetricsInputError, match=message):
        performance_metrics(returns)


def test_nan_in_a_population_names_the_strategy_and_bar() -> None:
    population = np.zeros((3, 10))
    population[2, 7] = np.nan
    with pytest.raises(MetricsInputError, match=r"\(2, 7\)"):
        sharpe_ratios(population)


def test_malformed_side_inputs_are_rejected() -> None:
    with pytest.raises(MetricsInputError, match="positions have shape"):
        performance_metrics([0.01, 0.02], positions=[1.0])
    with pytest.raises(MetricsInputError, match="trade_returns"):
        performance_metrics([0.01, 0.02], trade_returns=[0.1, float("nan")])
    with pytest.raises(MetricsInputError, match="turnover"):
        performance_metrics([0.01, 0.02], turnover=[0.5, -0.1])
    with pytest.raises(MetricsInputError, match="1-d returns"):
        performance_metrics(np.zeros((2, 3)))
    with pytest.raises(MetricsInputError, match="periods_per_year"):
        sharpe_ratios(RETURNS, periods_per_year=0)


def test_trade_statistics() -> None:
    stats = trade_statistics([0.02, -0.01, 0.0, 0.03, -0.02])
    assert stats.trade_count == 5
    assert stats.win_rate == pytest.approx(2 / 5)  # the break-even trade is not a win
    assert stats.profit_factor == pytest.approx(0.05 / 0.03)
    assert trade_statistics([0.01, 0.0]).profit_factor == math.inf
    assert trade_statistics([0.0, 0.0]).profit_factor == 0.0


def test_population_trade_statistics_follow_the_same_conventions() -> None:
    counts, wins = np.array([0, 4, 3]), np.array([0, 1, 3])
    assert win_rates(wins, counts).tolist() == [0.0, 0.25, 1.0]
    assert profit_factors([0.0, 2.0, 3.0], [0.0, 4.0, 0.0]).tolist() == [0.0, 0.5, math.inf]
    with pytest.raises(MetricsInputError, match="winning_trades"):
        win_rates([5], [4])


def test_exposure_and_turnover_from_positions_and_from_a_turnover_series() -> None:
    positions = [0.0, 1.0, 1.0, 0.0, -1.0, -1.0]
    returns = [0.0, 0.01, -0.01, 0.0, 0.02, 0.01]
    metrics = performance_metrics(returns, positions=positions)
    assert metrics.exposure == pytest.approx(4 / 6)
    assert metrics.turnover == pytest.approx(3 / 6)  # opening at bar 2, closing at 4, opening short at 5
    from_series = performance_metrics(returns, positions=positions, turnover=[0, 2, 0, 2, 2, 0])
    assert from_series.turnover == pytest.approx(1.0) and from_series.exposure == pytest.approx(4 / 6)


def test_as_dict_can_drop_infinities_for_json() -> None:
    metrics = performance_metrics(RETURNS, trade_returns=[0.01, 0.02])
    assert metrics.as_dict()["profit_factor"] == math.inf
    assert metrics.as_dict(finite_only=True)["profit_factor"] is None


def test_population_functions_match_row_by_row_results() -> None:
    rng = np.random.default_rng(7)
    population = rng.normal(0.0005, 0.01, size=(6, 300))
    population[3] = 0.0  # a strategy that never traded
    population[4, :] = 0.002  # and a degenerate constant one
    functions = [
        total_returns,
        cagrs,
        annualised_volatilities,
        sharpe_ratios,
        sortino_ratios,
        max_drawdowns,
        max_drawdown_durations,
        calmar_ratios,
        return_skewness,
        return_kurtosis,
    ]
    for function in functions:
        together = function(population)
        assert together.shape == (6,), function.__name__
        for row in range(6):
            single = function(population[row])
            assert single.shape == (), function.__name__
            assert together[row] == pytest.approx(float(single), rel=1e-12, abs=1e-15), function.__name__
    positions = np.sign(population)
    assert exposures(positions).shape == turnovers(positions).shape == (6,)


def test_skewness_and_kurtosis_use_population_moments() -> None:
    values = [0.01, 0.02, 0.03, 0.10]
    mean = sum(values) / 4
    m2 = sum((v - mean) ** 2 for v in values) / 4
    m3 = sum((v - mean) ** 3 for v in values) / 4
    m4 = sum((v - mean) ** 4 for v in values) / 4
    assert float(return_skewness(values)) == pytest.approx(m3 / m2**1.5)
    assert float(return_kurtosis(values)) == pytest.approx(m4 / m2**2)
    assert float(return_kurtosis(np.full(5, 0.01))) == 3.0 and float(return_skewness(np.full(5, 0.01))) == 0.0


@pytest.mark.parametrize(
    ("p", "quantile"),
    [
        (0.5, 0.0),
        (0.975, 1.959963984540054),
        (0.99, 2.3263478740408408),
        (0.999, 3.090232306167813),
        (0.01, -2.3263478740408408),
        (0.841344746068543, 1.0),
    ],
)
def test_normal_ppf_known_quantiles(p: float, quantile: float) -> None:
    assert normal_ppf(p) == pytest.approx(quantile, abs=1e-13)


def test_normal_ppf_inverts_the_cdf_in_the_tails_and_middle() -> None:
    probabilities = [
        *np.logspace(-300, -1, 60),
        *np.linspace(0.02, 0.98, 49),
        *(1 - np.logspace(-10, -1, 20)),
    ]
    for p in probabilities:
        assert normal_cdf(normal_ppf(float(p))) == pytest.approx(float(p), rel=1e-11)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(MetricsInputError, match="strictly between 0 and 1"):
            normal_ppf(bad)


def test_probabilistic_sharpe_ratio_by_hand() -> None:
    # SR 0.1 per bar over 101 bars, normal returns: z = 0.1 * sqrt(100) / sqrt(1 + (3 - 1) / 4 * 0.01)
    z = 0.1 * 10 / math.sqrt(1.005)
    expected = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    assert probabilistic_sharpe_ratio(0.1, 0.0, 101) == pytest.approx(expected, rel=1e-12)
    # Negative skew and fat tails widen the Sharpe's error band: less confidence for the same SR.
    assert probabilistic_sharpe_ratio(0.1, 0.0, 101, skewness=-1.0, kurtosis=6.0) < expected
    with pytest.raises(MetricsInputError, match="not positive"):
        probabilistic_sharpe_ratio(1.0, 0.0, 100, skewness=5.0, kurtosis=3.0)


def test_deflated_sharpe_reproduces_the_papers_numerical_example() -> None:
    # Bailey and Lopez de Prado (2014), numerical example: 100 trials, annualised SR variance 1/2, five years
    # of daily data (T = 1250, 250 days a year), best annualised SR 2.5, skewness -3, kurtosis 10.
    # The paper reports E[max SR] ~ 0.1132 (per day) and DSR ~ 0.9004.
    sharpe_std = math.sqrt(0.5 / 250)
    assert expected_maximum_sharpe(sharpe_std, 100) == pytest.approx(0.1132, abs=5e-5)
    dsr = deflated_sharpe_ratio(
        2.5 / math.sqrt(250), 1250, n_trials=100, sharpe_std=sharpe_std, skewness=-3.0, kurtosis=10.0
    )
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_expected_maximum_sharpe_by_hand_and_degenerate_cases() -> None:
    gamma = 0.5772156649015329
    by_hand = 0.2 * ((1 - gamma) * 2.3263478740408408 + gamma * normal_ppf(1 - 1 / (100 * math.e)))
    assert expected_maximum_sharpe(0.2, 100) == pytest.approx(by_hand, rel=1e-12)
    assert expected_maximum_sharpe(0.2, 1) == 0.0  # one trial: nothing was selected
    assert deflated_sharpe_ratio(0.1, 101, n_trials=1, sharpe_std=0.3) == pytest.approx(
        probabilistic_sharpe_ratio(0.1, 0.0, 101)
    )
    assert expected_maximum_sharpe(0.2, 1000) > expected_maximum_sharpe(0.2, 10)


def test_deflated_sharpe_from_trial_sharpes_matches_the_explicit_form() -> None:
    trials = [0.01, 0.05, -0.02, 0.08, 0.03]
    from_trials = deflated_sharpe_ratio(0.08, 500, trial_sharpes=trials)
    explicit = deflated_sharpe_ratio(0.08, 500, n_trials=5, sharpe_std=statistics.stdev(trials))
    assert from_trials == pytest.approx(explicit, rel=1e-12)
    with pytest.raises(MetricsInputError, match="needs trial_sharpes"):
        deflated_sharpe_ratio(0.08, 500, n_trials=5)


def test_population_deflated_sharpe_separates_skill_from_luck() -> None:
    rng = np.random.default_rng(11)
    noise = rng.normal(0.0, 0.01, size=(50, 1000))
    lucky = population_deflated_sharpe(noise)
    assert lucky.selected_index == int(np.argmax(sharpe_ratios(noise)))
    expected = deflated_sharpe_ratio(
        lucky.observed_sharpe,
        1000,
        trial_sharpes=sharpe_ratios(noise, periods_per_year=1),
        skewness=float(return_skewness(noise[lucky.selected_index])),
        kurtosis=float(return_kurtosis(noise[lucky.selected_index])),
    )
    assert lucky.deflated_sharpe_ratio == pytest.approx(expected, rel=1e-12)
    assert lucky.deflated_sharpe_ratio < 0.9  # the best of 50 coin-flippers is not significant

    skilled = noise.copy()
    skilled[17] += 0.002  # an annualised Sharpe around 3
    assert population_deflated_sharpe(skilled).selected_index == 17
    assert population_deflated_sharpe(skilled).deflated_sharpe_ratio > 0.95


def test_compiled_moments_and_drawdowns_equal_numpys_arithmetic_bit_for_bit() -> None:
    rng = np.random.default_rng(8)
    for n_bars in (1, 2, 7, 8, 9, 127, 128, 129, 1000, 5031, 8193, 20_000):
        returns = rng.normal(0.0, 0.02, (3, n_bars)) * rng.choice([1e-4, 1.0, 30.0], (3, n_bars))
        returns[:, ::5] = 0.0
        returns = np.clip(returns, -0.99, None)
        statistics = return_statistics(returns, periods_per_year=252)
        assert np.array_equal(statistics.mean, returns.mean(axis=-1))
        if n_bars > 1:
            std = returns.std(axis=-1, ddof=1)
            assert np.array_equal(np.sqrt(statistics.squared_deviations / (n_bars - 1)), std)
            defined = std > ZERO_VOLATILITY_TOLERANCE * np.maximum(1.0, np.abs(returns.mean(axis=-1)))
            numpy_sharpe = np.where(defined, returns.mean(axis=-1) / np.where(defined, std, 1.0), 0.0)
            assert np.array_equal(statistics.sharpe, numpy_sharpe * math.sqrt(252))
        equity = equity_curves(returns)
        drawdowns = equity / np.maximum(np.maximum.accumulate(equity, axis=-1), 1.0) - 1.0
        curves_depth = np.minimum(drawdowns.min(axis=-1), 0.0)
        assert np.array_equal(statistics.max_drawdown, curves_depth)
        assert np.array_equal(max_drawdowns(returns), curves_depth)
        assert np.array_equal(sharpe_ratios(returns), statistics.sharpe)


def test_minimum_track_record_length_by_hand() -> None:
    # SR 0.1 per bar against 0.02, skew -0.5, kurtosis 5: 1 + (1 + 0.05 + 0.01) (1.6449 / 0.08)^2.
    expected = 1.0 + (1.0 + 0.5 * 0.1 + 1.0 * 0.01) * (normal_ppf(0.95) / 0.08) ** 2
    assert minimum_track_record_length(0.1, 0.02, -0.5, 5.0) == pytest.approx(expected)
    assert minimum_track_record_length(0.1, 0.02, confidence=0.99) > minimum_track_record_length(0.1, 0.02)
    assert minimum_track_record_length(0.02, 0.02) == math.inf
    # At exactly that length the PSR reaches the confidence.
    length = minimum_track_record_length(0.1, 0.02, -0.5, 5.0)
    assert probabilistic_sharpe_ratio(0.1, 0.02, length, -0.5, 5.0) == pytest.approx(0.95)
    with pytest.raises(MetricsInputError, match="confidence"):
        minimum_track_record_length(0.1, 0.0, confidence=1.0)
