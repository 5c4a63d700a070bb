"""Regime classifiers behind one interface: a causal label and label probabilities for every bar.

Two classifiers: transparent rules on trend and volatility (the default), and a Gaussian hidden Markov model
fitted per symbol on a training window whose labels come from the forward filter only. Smoothed posteriors
and Viterbi paths use later bars, so they are never produced here: the label at bar t depends on bars up to t
and on parameters fitted on the training window the caller chose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

import numba
import numpy as np
import pandas as pd

REGIME_LABELS: tuple[str, ...] = ("bull_trend", "bear_trend", "range", "high_volatility")
PROBABILITY_COLUMNS: tuple[str, ...] = tuple(f"prob_{label}" for label in REGIME_LABELS)
REGIME_COLUMNS: tuple[str, ...] = ("date", "symbol", "regime", *PROBABILITY_COLUMNS, "warmup")
# Where a classifier has no input yet (warm-up) it says so and stays neutral: "range", uniform probabilities.
NEUTRAL_LABEL = "range"
_BULL, _BEAR, _RANGE, _HIGH_VOL = range(4)


class RegimeError(ValueError):
    """A classifier was misconfigured or used out of order (e.g. classify before fit)."""


class RegimeClassifier(Protocol):
    """What every classifier offers; `fit` returns the classifier so `make_classifier(c).fit(...)` chains."""

    name: str

    def fit(self, bars: pd.DataFrame, features: pd.DataFrame) -> RegimeClassifier: ...

    def classify(self, bars: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame: ...


def _regime_frame(
    dates: pd.arrays.DatetimeArray,
    symbols: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray,
    warmup: np.ndarray,
) -> pd.DataFrame:
    """Assemble the canonical regime frame; warm-up rows get the neutral label and uniform probabilities.

    `dates` is the date column's own array (``.array``): ``to_numpy()`` of tz-aware dates builds one
    Timestamp object per row, the slowest step here on a year of hourly bars."""
    probabilities = probabilities.copy()
    probabilities[warmup] = 1.0 / len(REGIME_LABELS)
    label_names = np.asarray(REGIME_LABELS, dtype=object)[labels]
    label_names[warmup] = NEUTRAL_LABEL
    frame = pd.DataFrame({"date": dates, "symbol": symbols, "regime": label_names})
    for column_index, column in enumerate(PROBABILITY_COLUMNS):
        frame[column] = probabilities[:, column_index]
    frame["warmup"] = warmup.astype(bool)
    frame["date"] = frame["date"].astype("datetime64[ns, UTC]")
    return frame


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise RegimeError(f"{what} is missing columns {missing}; compute features with SensoryCortex first")


# --- rules -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the rule set, in the units of the features they read.

    trend: `what_momentum_60` (60-bar log return in sigma units) beyond +/- trend_threshold is a trend.
    volatility: `what_volatility_20` ranked within its own last `volatility_lookback` bars (at least
    `min_history` of them) above `volatility_quantile` is high volatility, which overrides the trend. A
    bounded window (not an expanding one) makes the label independent of where the history starts once a
    symbol has `volatility_lookback` bars, so partitioned runs with that much look-back match a full run.
    """

    trend_threshold: float = 1.0
    volatility_quantile: float = 0.8
    volatility_lookback: int = 756
    min_history: int = 252
    temperature: float = 2.0


class RuleRegimeClassifier:
    """Transparent rules: high volatility first, then trend sign, otherwise range.

    Probabilities are a softmax of scores built so that their argmax is exactly the rule's label:
    bull = T/tau - 1, bear = -T/tau - 1, range = 1 - |T|/tau, high_volatility = best trend score +
    (V - q) / (1 - q), with T the trend strength, tau its threshold, V the volatility percentile, q its cut.
    """

    name = "rules"

    def __init__(self, config: RuleConfig | None = None) -> None:
        self.config = config or RuleConfig()

    def fit(self, bars: pd.DataFrame, features: pd.DataFrame) -> RuleRegimeClassifier:
        """Nothing to learn: the thresholds are the model."""
        return self

    def scores(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Per-bar scores (n, 4) in REGIME_LABELS order and the rows whose inputs are still warming up."""
        _require_columns(features, ("symbol", "what_momentum_60", "what_volatility_20"), "feature frame")
        config = self.config
        features = features.reset_index(drop=True)  # the rank below realigns on this index
        trend = features["what_momentum_60"].to_numpy(dtype=np.float64) / config.trend_threshold
        volatility_rank = (
            features.groupby("symbol", sort=False)["what_volatility_20"]
            .rolling(config.volatility_lookback, min_periods=config.min_history)
            .rank(pct=True)
            .reset_index(level=0, drop=True)
            .sort_index()
            .to_numpy()
        )
        scores = np.empty((len(features), 4))
        scores[:, _BULL] = trend - 1.0
        scores[:, _BEAR] = -trend - 1.0
        scores[:, _RANGE] = 1.0 - np.abs(trend)
        best_trend = scores[:, :3].max(axis=1)
        scores[:, _HIGH_VOL] = best_trend + (volatility_rank - config.volatility_quantile) / (
            1.0 - config.volatility_quantile
        )
        warmup = np.isnan(scores).any(axis=1)
        scores[warmup] = 0.0
        return scores, warmup

    def classify(self, bars: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
        scores, warmup = self.scores(features)
        scaled = self.config.temperature * scores
        scaled -= scaled.max(axis=1, keepdims=True)
        weights = np.exp(scaled)
        probabilities = weights / weights.sum(axis=1, keepdims=True)
        labels = scores.argmax(axis=1)
        return _regime_frame(
            features["date"].array, features["symbol"].to_numpy(), probabilities, labels, warmup
        )


# --- Gaussian HMM ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HmmConfig:
    """A 4-state Gaussian HMM on daily log returns, optionally plus log `volatility_window`-bar volatility.

    Returns alone are the default: on regime-switching data the HMM infers volatility itself, and a rolling
    volatility observation breaks the model's conditional independence (it scored 0.75 balanced accuracy
    against 0.86 for returns alone on the bundled synthetic market; see benchmarks/sensing.py).

    `n_init` EM starts (the first from volatility quantiles, the rest seeded at random); the best
    log-likelihood wins. `sticky` is added to the transition counts' diagonal so regimes persist rather
    than flicker.
    """

    use_log_volatility: bool = False
    volatility_window: int = 10
    max_iterations: int = 100
    tolerance: float = 1e-5
    n_init: int = 2
    seed: int = 0
    covariance_floor: float = 1e-3
    sticky: float = 10.0


@dataclass(frozen=True)
class GaussianHmmParams:
    """A fitted model in standardised observation units, with its states already ordered as REGIME_LABELS."""

    start: np.ndarray
    transition: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    centre: np.ndarray
    scale: np.ndarray
    log_likelihood: float


@numba.njit(cache=True)
def _forward(
    emission: np.ndarray, start: np.ndarray, transition: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled forward recursion: filtered state probabilities and the per-step normalisers."""
    n, k = emission.shape
    alpha = np.empty((n, k))
    norm = np.empty(n)
    total = 0.0
    for j in range(k):
        alpha[0, j] = start[j] * emission[0, j]
        total += alpha[0, j]
    norm[0] = total
    for j in range(k):
        alpha[0, j] /= total
    for t in range(1, n):
        total = 0.0
        for j in range(k):
            predicted = 0.0
            for i in range(k):
                predicted += alpha[t - 1, i] * transition[i, j]
            alpha[t, j] = predicted * emission[t, j]
            total += alpha[t, j]
        norm[t] = total
        for j in range(k):
            alpha[t, j] /= total
    return alpha, norm


@numba.njit(cache=True)
def _backward_statistics(
    emission: np.ndarray, transition: np.ndarray, alpha: np.ndarray, norm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed posteriors and expected transition counts, used only inside EM on the training window."""
    n, k = emission.shape
    beta = np.ones(k)
    gamma = np.empty((n, k))
    counts = np.zeros((k, k))
    for j in range(k):
        gamma[n - 1, j] = alpha[n - 1, j]
    for t in range(n - 2, -1, -1):
        weighted = np.empty(k)
        for j in range(k):
            weighted[j] = emission[t + 1, j] * beta[j] / norm[t + 1]
        new_beta = np.zeros(k)
        for i in range(k):
            for j in range(k):
                flow = transition[i, j] * weighted[j]
                new_beta[i] += flow
                counts[i, j] += alpha[t, i] * flow
        beta = new_beta
        total = 0.0
        for j in range(k):
            gamma[t, j] = alpha[t, j] * beta[j]
            total += gamma[t, j]
        for j in range(k):
            gamma[t, j] /= total
    return gamma, counts


def _log_emission(observations: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """Gaussian log densities (n, k), row by row with elementwise arithmetic only.

    No BLAS/LAPACK on the observations: their blocking can change the last bits of a row's result with
    the number of rows, and the no-look-ahead guarantee is exact (a bar's output must not depend on how
    many bars follow it).
    """
    n, dimension = observations.shape
    out = np.empty((n, means.shape[0]))
    for state in range(means.shape[0]):
        precision = np.linalg.inv(covariances[state])
        _, log_det = np.linalg.slogdet(covariances[state])
        centred = observations - means[state]
        mahalanobis = np.zeros(n)
        for row in range(dimension):
            for column in range(dimension):
                mahalanobis += precision[row, column] * centred[:, row] * centred[:, column]
        out[:, state] = -0.5 * (mahalanobis + log_det + dimension * np.log(2.0 * np.pi))
    return out


def _scaled_emission(log_emission: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """exp(log b - row max): avoids underflow; the row max is added back to the log-likelihood."""
    row_max = log_emission.max(axis=1)
    return np.exp(log_emission - row_max[:, None]), row_max


def hmm_observations(bars: pd.DataFrame, config: HmmConfig) -> np.ndarray:
    """Causal observations per row of `bars`: log return [, log rolling volatility]; NaN in warm-up.

    Warm-up is the volatility window either way, so switching the option does not move the first label.
    """
    volatility_window = config.volatility_window
    log_close = np.log(bars["adj_close"].to_numpy(dtype=np.float64))
    frame = pd.DataFrame({"symbol": bars["symbol"].to_numpy(), "log_close": log_close})
    returns = frame.groupby("symbol", sort=False)["log_close"].diff()
    volatility = (
        returns.groupby(frame["symbol"], sort=False)
        .rolling(volatility_window)
        .std()
        .reset_index(level=0, drop=True)
        .sort_index()
    )
    log_volatility = np.log(np.maximum(volatility.to_numpy(), 1e-8))
    log_volatility[np.isnan(volatility.to_numpy())] = np.nan
    if config.use_log_volatility:
        return np.column_stack([returns.to_numpy(), log_volatility])
    return_values = returns.to_numpy().copy()
    return_values[np.isnan(log_volatility)] = np.nan
    return return_values[:, None]


def _initial_parameters(
    observations: np.ndarray, rng: np.random.Generator, from_quantiles: bool, floor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n, dimension = observations.shape
    k = len(REGIME_LABELS)
    if from_quantiles:
        order = np.argsort(
            np.abs(observations[:, 0]) if dimension == 1 else observations[:, 1], kind="mergesort"
        )
        assignment = np.empty(n, dtype=np.int64)
        assignment[order] = np.minimum(np.arange(n) * k // n, k - 1)
        responsibilities = np.eye(k)[assignment] * 0.9 + 0.1 / k
    else:
        responsibilities = rng.dirichlet(np.ones(k), size=n)
    means, covariances = _gaussian_m_step(observations, responsibilities, floor)
    transition = np.full((k, k), 0.05 / (k - 1))
    np.fill_diagonal(transition, 0.95)
    return np.full(k, 1.0 / k), transition, means, covariances


def _gaussian_m_step(
    observations: np.ndarray, responsibilities: np.ndarray, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    weights = responsibilities.sum(axis=0) + 1e-12
    means = (responsibilities.T @ observations) / weights[:, None]
    dimension = observations.shape[1]
    covariances = np.empty((len(weights), dimension, dimension))
    for state in range(len(weights)):
        centred = observations - means[state]
        covariances[state] = (responsibilities[:, state, None] * centred).T @ centred / weights[state]
        covariances[state] += floor * np.eye(dimension)
    return means, covariances


def _expectation_maximisation(
    observations: np.ndarray, config: HmmConfig, rng: np.random.Generator, from_quantiles: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    start, transition, means, covariances = _initial_parameters(
        observations, rng, from_quantiles, config.covariance_floor
    )
    k = len(start)
    previous = -np.inf
    log_likelihood = -np.inf
    for _ in range(config.max_iterations):
        emission, row_max = _scaled_emission(_log_emission(observations, means, covariances))
        alpha, norm = _forward(emission, start, transition)
        log_likelihood = float(np.log(norm).sum() + row_max.sum())
        gamma, counts = _backward_statistics(emission, transition, alpha, norm)
        start = gamma[0] * 0.5 + 0.5 / k
        counts = counts + config.sticky * np.eye(k)
        transition = counts / counts.sum(axis=1, keepdims=True)
        means, covariances = _gaussian_m_step(observations, gamma, config.covariance_floor)
        if abs(log_likelihood - previous) <= config.tolerance * abs(log_likelihood):
            break
        previous = log_likelihood
    return start, transition, means, covariances, log_likelihood


def label_order(means: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """State index for each REGIME_LABELS entry, from the return dimension's mean and variance.

    Largest return variance -> high_volatility; of the rest, highest mean -> bull_trend, lowest ->
    bear_trend, the remaining one -> range. Ties resolve by state index, so names are deterministic.
    """
    variance = covariances[:, 0, 0]
    high_vol = int(np.argmax(variance))
    rest = [state for state in range(len(variance)) if state != high_vol]
    by_mean = sorted(rest, key=lambda state: (means[state, 0], -state))
    bear, middle, bull = by_mean[0], by_mean[1], by_mean[-1]
    return np.array([bull, bear, middle, high_vol])


class HmmRegimeClassifier:
    """Gaussian HMM per symbol; `fit` on the training window, `classify` by forward filtering only."""

    name = "hmm"

    def __init__(self, config: HmmConfig | None = None) -> None:
        self.config = config or HmmConfig()
        self.params: dict[str, GaussianHmmParams] = {}

    def _fit_symbol(self, observations: np.ndarray) -> GaussianHmmParams:
        config = self.config
        if len(observations) < 10 * len(REGIME_LABELS):
            raise RegimeError(
                f"HMM training window has {len(observations)} usable bars; give it at least "
                f"{10 * len(REGIME_LABELS)} (a year of daily bars is a sensible minimum)"
            )
        centre = observations.mean(axis=0)
        scale = observations.std(axis=0)
        scale[scale == 0] = 1.0
        standardised = (observations - centre) / scale
        rng = np.random.default_rng(config.seed)
        best: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float] | None = None
        for attempt in range(config.n_init):
            result = _expectation_maximisation(standardised, config, rng, from_quantiles=attempt == 0)
            if best is None or result[4] > best[4]:
                best = result
        assert best is not None
        start, transition, means, covariances, log_likelihood = best
        order = label_order(means, covariances)
        return GaussianHmmParams(
            start=start[order],
            transition=transition[np.ix_(order, order)],
            means=means[order],
            covariances=covariances[order],
            centre=centre,
            scale=scale,
            log_likelihood=log_likelihood,
        )

    def fit(self, bars: pd.DataFrame, features: pd.DataFrame | None = None) -> HmmRegimeClassifier:
        """Fit one model per symbol on the bars given (the caller's training window)."""
        observations = hmm_observations(bars, self.config)
        symbols = bars["symbol"].to_numpy()
        usable = ~np.isnan(observations).any(axis=1)
        self.params = {
            str(symbol): self._fit_symbol(observations[(symbols == symbol) & usable])
            for symbol in pd.unique(symbols)
        }
        return self

    def filtered_probabilities(self, symbol: str, observations: np.ndarray) -> np.ndarray:
        """p(state_t | observations_1..t) in REGIME_LABELS order: the forward filter, nothing later."""
        params = self.params.get(symbol)
        if params is None:
            raise RegimeError(f"no HMM fitted for symbol {symbol!r}; call fit with bars that include it")
        standardised = (observations - params.centre) / params.scale
        emission, _ = _scaled_emission(_log_emission(standardised, params.means, params.covariances))
        alpha, _ = _forward(emission, params.start, params.transition)
        return alpha

    def classify(self, bars: pd.DataFrame, features: pd.DataFrame | None = None) -> pd.DataFrame:
        if not self.params:
            raise RegimeError("the HMM classifier is not fitted; call fit(train_bars, train_features) first")
        observations = hmm_observations(bars, self.config)
        symbols = bars["symbol"].to_numpy()
        probabilities = np.full((len(bars), len(REGIME_LABELS)), 1.0 / len(REGIME_LABELS))
        warmup = np.isnan(observations).any(axis=1)
        for symbol in pd.unique(symbols):
            rows = np.flatnonzero((symbols == symbol) & ~warmup)
            if len(rows):
                probabilities[rows] = self.filtered_probabilities(str(symbol), observations[rows])
        labels = probabilities.argmax(axis=1)
        return _regime_frame(bars["date"].array, symbols, probabilities, labels, warmup)


# --- configuration -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegimeConfig:
    """Which classifier and its settings; `kind` is "rules" (default) or "hmm"."""

    kind: str = "rules"
    rules: RuleConfig = field(default_factory=RuleConfig)
    hmm: HmmConfig = field(default_factory=HmmConfig)


def _dataclass_from_mapping(cls: type[Any], values: Mapping[str, Any], where: str) -> Any:
    known = {item.name for item in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RegimeError(f"unknown {where} settings {unknown}; known ones are {sorted(known)}")
    return replace(cls(), **values)


def regime_config_from_mapping(values: Mapping[str, Any]) -> RegimeConfig:
    """Build a RegimeConfig from plain config, e.g. {"kind": "hmm", "hmm": {"seed": 3}}."""
    unknown = sorted(set(values) - {"kind", "rules", "hmm"})
    if unknown:
        raise RegimeError(f"unknown regime settings {unknown}; use 'kind', 'rules' and 'hmm'")
    return RegimeConfig(
        kind=str(values.get("kind", "rules")),
        rules=_dataclass_from_mapping(RuleConfig, values.get("rules", {}), "rules"),
        hmm=_dataclass_from_mapping(HmmConfig, values.get("hmm", {}), "hmm"),
    )


def make_classifier(config: RegimeConfig | Mapping[str, Any] | None = None) -> RegimeClassifier:
    """The configured classifier; the rule set when nothing is said."""
    if config is None:
        config = RegimeConfig()
    elif not isinstance(config, RegimeConfig):
        config = regime_config_from_mapping(config)
    if config.kind == "rules":
        return RuleRegimeClassifier(config.rules)
    if config.kind == "hmm":
        return HmmRegimeClassifier(config.hmm)
    raise RegimeError(f"unknown regime classifier kind {config.kind!r}; use 'rules' or 'hmm'")
