"""What trading costs a strategy, as one value: measured with it, stored with it, traded with it.

A strategy's numbers (its fitness, its out-of-sample Sharpe, the sleeve equity the live fold sizes from) hold
only for the costs it was measured with, so `Costs` travels with the strategy: the evolution run records it
in the registry, the out-of-sample measurement and the parity gate read it back from there, and the live job
folds the kernel's step with it, whatever ``EMP_FEE_BPS`` / ``EMP_SLIPPAGE_BPS`` say by then (those settings
only choose the costs of the *next* research run and of the paper broker's simulated venue).

Terms (per side, in basis points of the fill):

* ``fee_bps``: commission on the fill's notional;
* ``slippage_bps``: the fill price moves against the trader (buys higher, sells lower).

The FX spread and overnight swaps are the *instrument's* terms, not the strategy's
(`InstrumentMeta.spread_pips` and its swaps; `financing` puts them on the kernel's grid): every strategy
trading an instrument pays the same.

Adding a term: add a keyword field whose default charges
nothing, validate it in `_check_term` (or next to it), carry it to the compiled step through `fill_costs()`
(and a new `sleeve.FillCosts` field), and add it to `to_dict`. Nothing else changes for callers: fields are
keyword-only, and `from_dict` reads a record stored before the term existed as "not charged", which is what
that strategy was measured with. Only `fee_bps` and `slippage_bps` (`STORED_SINCE_FIRST_VERSION`) must be
present in a stored record.

The capital a strategy is traded with is a separate amount (account currency behind 1.0 of the kernel's
equity, see `execution.sleeve_target`); `DEFAULT_CAPITAL` is its one default (``EMP_CAPITAL``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from emp_pipeline.domain.sleeve import FillCosts

DEFAULT_FEE_BPS = 1.0
DEFAULT_SLIPPAGE_BPS = 1.0
DEFAULT_CAPITAL = 100_000.0  # account currency; the paper account's starting cash and the traded capital
# 10% of the notional per side: a larger figure is a unit mistake (a percent or a fraction typed as bps).
MAX_BPS = 1_000.0
STORED_SINCE_FIRST_VERSION = ("fee_bps", "slippage_bps")


class CostsError(ValueError):
    """A cost term that cannot be right, or a stored record that cannot be read; the message says which."""


def _check_term(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CostsError(f"Costs.{name}={value!r} is not a number: give basis points per side, e.g. 1.0")
    if not (math.isfinite(value) and 0.0 <= value <= MAX_BPS):
        raise CostsError(f"Costs.{name}={value!r} is outside [0, {MAX_BPS:g}] basis points per side")


@dataclass(frozen=True, kw_only=True)
class Costs:
    """Per-side trading costs in basis points (see the module docstring); invalid terms raise CostsError."""

    fee_bps: float = DEFAULT_FEE_BPS
    slippage_bps: float = DEFAULT_SLIPPAGE_BPS

    def __post_init__(self) -> None:
        for term in fields(self):
            _check_term(term.name, getattr(self, term.name))

    def fill_costs(self) -> FillCosts:
        """The costs in the types the compiled step (`sleeve.step_sleeve`) reads."""
        return FillCosts(float(self.fee_bps), float(self.slippage_bps))

    def to_dict(self) -> dict[str, float]:
        """The record the registry stores with a strategy's evolution run (JSON of plain floats)."""
        return {"fee_bps": float(self.fee_bps), "slippage_bps": float(self.slippage_bps)}

    @classmethod
    def from_dict(cls, stored: Mapping[str, object], *, source: str) -> Costs:
        """Costs from a stored record; ``source`` names it in errors (e.g. "evolution run 3f2a...").

        A term added after the record was written reads as not charged (see the module docstring); a term
        this version does not know means the record was written by a newer version, and is refused.
        """
        known = {term.name for term in fields(cls)}
        if unknown := sorted(set(stored) - known):
            raise CostsError(
                f"costs of {source} name terms this version does not know: {', '.join(unknown)} (known: "
                f"{', '.join(sorted(known))}); it was written by a newer emp-pipeline"
            )
        if missing := [name for name in STORED_SINCE_FIRST_VERSION if name not in stored]:
            raise CostsError(f"costs of {source} lack {', '.join(missing)}: the record is incomplete")
        try:
            return cls(**{str(name): value for name, value in stored.items()})
        except CostsError as error:
            raise CostsError(f"costs of {source}: {error}") from None
