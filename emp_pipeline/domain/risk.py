"""Pre-trade risk checks: pure functions from (proposed orders, account snapshot, limits) to decisions.

Semantics, all measured against the account's equity (cash plus positions marked at the latest close):

* **Per-instrument limit.** After the order, the account's net position in the symbol must not exceed
  ``max_position_fraction x equity`` of notional (at the reference price).
* **Gross exposure limit.** After the order, the sum over symbols of ``|position| x price`` must not exceed
  ``max_gross_exposure x equity``.
* **Daily loss limit.** When equity has fallen from the day's starting equity (the equity at the previous
  bar's close) by ``daily_loss_limit`` or more, no exposure is added for the rest of the day.
* **Kill switch.** When the registry's kill switch is on, no exposure is added.

Choice: every limit, the kill switch included, blocks only what *adds* exposure. An order that only brings a
position toward zero always passes: stopping a loss must never be blocked by the rule that is meant to stop
losses. A blocked order that would cross zero (a reversal) is cut to the part that flattens, so the
position closes but does not reopen the other way. An order that increases exposure and breaks a limit is
rejected whole (not scaled down), so an approved quantity is always the strategy's own decision or a flat.

Orders are checked in the given order against a running snapshot, so two orders in one symbol (two
strategies) cannot each use the same headroom. Every decision carries the reason in words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from enum import StrEnum


class RiskConfigError(ValueError):
    """A risk limit is outside its meaningful range; the message names the setting."""


class MissingPriceError(ValueError):
    """A position cannot be marked to market because its symbol has no price."""


class RiskVerdict(StrEnum):
    APPROVED = "approved"
    REDUCED = "reduced"  # cut to the part that flattens the position
    REJECTED = "rejected"


@dataclass(frozen=True)
class RiskLimits:
    """Limits as fractions of account equity; `daily_loss_limit` 0.05 means a 5 % loss since the day began."""

    max_position_fraction: float = 0.25
    max_gross_exposure: float = 1.0
    daily_loss_limit: float = 0.05

    def __post_init__(self) -> None:
        for name in ("max_position_fraction", "max_gross_exposure"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise RiskConfigError(f"{name}={value} must be a positive finite fraction of equity")
        if not (math.isfinite(self.daily_loss_limit) and 0 < self.daily_loss_limit <= 1):
            raise RiskConfigError(
                f"daily_loss_limit={self.daily_loss_limit} must be in (0, 1] (a fraction of the day's equity)"
            )


class RiskCeilingError(RiskConfigError):
    """A run asked for a risk limit looser than the environment's ceiling; the message names both."""


def tightened_limits(
    ceilings: RiskLimits,
    requested: Mapping[str, float | None],
    ceiling_origins: Mapping[str, str] | None = None,
) -> RiskLimits:
    """The limits a run trades under: each requested value (None keeps the ceiling), never above it.

    The environment's limits are hard ceilings because run config can be typed by anyone who reaches the
    UI: a run may only tighten them (every limit here is looser when larger). ``ceiling_origins`` names
    where each ceiling was set (an environment variable) so the refusal says what to change.
    """
    unknown = sorted(set(requested) - {field.name for field in fields(RiskLimits)})
    if unknown:
        raise RiskConfigError(
            f"unknown risk limits {unknown}; use {[field.name for field in fields(RiskLimits)]}"
        )
    origins = ceiling_origins or {}
    chosen = {}
    for name, value in requested.items():
        if value is None:
            continue
        ceiling = getattr(ceilings, name)
        if not math.isfinite(value) or value > ceiling:
            origin = f" (set by {origins[name]})" if name in origins else ""
            raise RiskCeilingError(
                f"{name}={value:g} is above its ceiling {ceiling:g}{origin}: a run may only tighten the "
                "environment's risk limits; change the ceiling in the environment to allow more"
            )
        chosen[name] = value
    return replace(ceilings, **chosen)


@dataclass(frozen=True)
class AccountSnapshot:
    """The account as the risk checks see it: equity, the day's starting equity, net positions, prices."""

    equity: float
    day_start_equity: float
    kill_switch: bool
    positions: Mapping[str, float]  # symbol -> signed net units over every strategy
    prices: Mapping[str, float]  # symbol -> reference price (latest close)

    @property
    def daily_return(self) -> float:
        if self.day_start_equity <= 0:
            return 0.0
        return self.equity / self.day_start_equity - 1.0


@dataclass(frozen=True)
class ProposedOrder:
    """A signed quantity in one symbol; `key` ties the decision back to the caller's order."""

    key: str
    symbol: str
    signed_quantity: float


@dataclass(frozen=True)
class RiskDecision:
    order: ProposedOrder
    verdict: RiskVerdict
    approved_quantity: float  # signed; 0 when rejected
    reason: str


def _gross_exposure(positions: Mapping[str, float], prices: Mapping[str, float]) -> float:
    return sum(abs(quantity) * prices[symbol] for symbol, quantity in positions.items() if quantity)


def _blocking_reason(
    order: ProposedOrder,
    after: float,
    positions: Mapping[str, float],
    snapshot: AccountSnapshot,
    limits: RiskLimits,
) -> str | None:
    """Why an exposure-adding order may not pass, or None if it may."""
    if snapshot.kill_switch:
        return "kill switch is on: no new exposure (turn it off with `emp kill-switch off`)"
    if -snapshot.daily_return >= limits.daily_loss_limit:
        return (
            f"daily loss {-snapshot.daily_return:.2%} reached the limit {limits.daily_loss_limit:.2%} "
            f"(equity {snapshot.equity:.2f} vs {snapshot.day_start_equity:.2f} at the day's start)"
        )
    if snapshot.equity <= 0:
        return f"account equity {snapshot.equity:.2f} is not positive"
    price = snapshot.prices[order.symbol]
    position_limit = limits.max_position_fraction * snapshot.equity
    if abs(after) * price > position_limit * (1 + 1e-12):
        return (
            f"{order.symbol} position {after:g} x {price:g} = {abs(after) * price:.2f} would exceed "
            f"{limits.max_position_fraction:.2%} of equity ({position_limit:.2f})"
        )
    gross_after = _gross_exposure({**positions, order.symbol: after}, snapshot.prices)
    gross_limit = limits.max_gross_exposure * snapshot.equity
    if gross_after > gross_limit * (1 + 1e-12):
        return (
            f"gross exposure would be {gross_after:.2f}, above {limits.max_gross_exposure:.2%} of equity "
            f"({gross_limit:.2f})"
        )
    return None


def check_orders(
    orders: Sequence[ProposedOrder], snapshot: AccountSnapshot, limits: RiskLimits
) -> list[RiskDecision]:
    """Decide every order in turn (see the module docstring); returns one decision per order, same order."""
    positions = {symbol: float(quantity) for symbol, quantity in snapshot.positions.items()}
    decisions: list[RiskDecision] = []
    for order in orders:
        if order.symbol not in snapshot.prices or not (
            math.isfinite(snapshot.prices[order.symbol]) and snapshot.prices[order.symbol] > 0
        ):
            decisions.append(
                RiskDecision(order, RiskVerdict.REJECTED, 0.0, f"no valid reference price for {order.symbol}")
            )
            continue
        before = positions.get(order.symbol, 0.0)
        after = before + order.signed_quantity
        reduces = abs(after) <= abs(before) and after * before >= 0
        if reduces:
            decisions.append(
                RiskDecision(order, RiskVerdict.APPROVED, order.signed_quantity, "reduces exposure")
            )
            positions[order.symbol] = after
            continue
        reason = _blocking_reason(order, after, positions, snapshot, limits)
        if reason is None:
            decisions.append(
                RiskDecision(order, RiskVerdict.APPROVED, order.signed_quantity, "within limits")
            )
            positions[order.symbol] = after
        elif before != 0 and after * before < 0:
            decisions.append(
                RiskDecision(order, RiskVerdict.REDUCED, -before, f"flatten only, not reversed: {reason}")
            )
            positions[order.symbol] = 0.0
        else:
            decisions.append(RiskDecision(order, RiskVerdict.REJECTED, 0.0, reason))
    return decisions


def position_fraction_ceiling(limits: RiskLimits) -> float:
    """The largest sizing gene (``position_fraction``) whose entries the live checks never refuse.

    How a genome's gene maps onto what the live check caps. A strategy trades one sleeve per instrument;
    a sleeve starts with 1/n of the strategy's kernel equity, and ``capital`` (account currency per 1.0 of
    kernel equity, EMP_CAPITAL or the account split equally over the active strategies) converts it. An
    entry decided at a close buys ``position_fraction x sleeve equity`` of notional at that close
    (`sleeve.entry_units`), which live is ``position_fraction x s_i x capital``. The per-instrument check
    compares the account's position in the symbol at that close with ``max_position_fraction x account
    equity``, and an account trading the strategies' capital has equity ``capital x S`` per strategy, S the
    sum of its sleeves' equities at that close. So the entry's account fraction is
    ``position_fraction x s_i / S``: at most ``position_fraction`` on every path (s_i <= S), equal to it
    for a one-instrument strategy (or a universe where one sleeve holds the strategy's equity). Bounding the
    gene by ``max_position_fraction`` is therefore the one bound that holds whatever the sleeves earn; the
    same argument over strategies trading one symbol the same way bounds their net position. Gross exposure
    sums every sleeve's position; at their entries they are at most ``position_fraction`` of the account
    in total, hence the smaller of the two limits (and never more than the gene's own range, 1). What this
    bound cannot promise: positions that grew with the price after their entry can still reach the gross
    limit, and live equity differs from the kernel's by volume rounding; the parity replay of the measured
    window (with the limits in force) reports any order the checks refused.
    """
    return min(limits.max_position_fraction, limits.max_gross_exposure, 1.0)


def sizing_violation(position_fraction: float, limits: RiskLimits) -> str | None:
    """Why a strategy sizing ``position_fraction`` of its sleeve cannot trade under ``limits``, or None."""
    ceiling = position_fraction_ceiling(limits)
    if position_fraction <= ceiling:
        return None
    return (
        f"sizes {position_fraction:.2%} of its sleeve per entry, above {ceiling:.2%} "
        f"(max_position_fraction {limits.max_position_fraction:.2%}, max_gross_exposure "
        f"{limits.max_gross_exposure:.2%} of account equity): a one-instrument entry would be rejected "
        "by the live risk check, so it would not trade as it was measured"
    )


def account_equity(cash: float, positions: Mapping[str, float], prices: Mapping[str, float]) -> float:
    """Cash plus every position marked at its price; a position without a price is a caller's error."""
    missing = sorted(symbol for symbol, quantity in positions.items() if quantity and symbol not in prices)
    if missing:
        raise MissingPriceError(
            f"no price to mark positions in {missing}: load the latest bars of those symbols"
        )
    return cash + sum(quantity * prices[symbol] for symbol, quantity in positions.items() if quantity)
