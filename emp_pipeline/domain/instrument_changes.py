"""Changes of an instrument's terms between what the registry holds and what a universe now says.

Terms (tick size, lot size, calendar, swaps, ...) size every order and decide which days trade, so a term
that changes silently re-sizes positions or turns an equity into a weekend-trading instrument. A change is
therefore an event: found here, recorded with old and new values, when and why, and accepted only through an
explicit action (the registry refuses it otherwise; see `registry` and the `instrument_universe` asset).
Adding a new symbol is not a change of terms: nothing stored depends on it yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from enum import Enum

from emp_pipeline.domain.instruments import InstrumentMeta

TERMS: tuple[str, ...] = tuple(field.name for field in fields(InstrumentMeta) if field.name != "symbol")


@dataclass(frozen=True)
class TermChange:
    """One term of one instrument, as stored and as the incoming universe states it (both as text)."""

    symbol: str
    term: str
    old: str
    new: str

    def describe(self) -> str:
        return f"{self.symbol} {self.term}: {self.old} -> {self.new}"


class InstrumentTermsChangedError(ValueError):
    """A universe changes stored instrument terms without an explicit acceptance; nothing was written."""

    def __init__(self, origin: str, changes: Sequence[TermChange], how_to_accept: str) -> None:
        self.changes = tuple(changes)
        listed = "; ".join(change.describe() for change in changes)
        super().__init__(
            f"{origin} changes {len(changes)} stored instrument terms ({listed}); nothing was written. "
            f"Terms change only by an explicit action: {how_to_accept}"
        )


def term_text(value: object) -> str:
    """The canonical text of a term value, so equal terms compare equal across storage round trips."""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def term_changes(
    stored: Iterable[InstrumentMeta], incoming: Iterable[InstrumentMeta], terms: Sequence[str] = TERMS
) -> list[TermChange]:
    """Every term in ``terms`` whose value differs for a symbol present in both, by symbol then term."""
    before = {meta.symbol: meta for meta in stored}
    changes = []
    for meta in sorted(incoming, key=lambda meta: meta.symbol):
        previous = before.get(meta.symbol)
        if previous is None:
            continue
        for term in terms:
            old, new = term_text(getattr(previous, term)), term_text(getattr(meta, term))
            if old != new:
                changes.append(TermChange(meta.symbol, term, old, new))
    return changes
