"""The instruments aggregate: the universe's reference data (terms, calendars) by symbol.

Terms never change as a side effect of loading a universe: `store_instruments` adds new symbols, and a
stored symbol whose terms differ is refused (`InstrumentTermsChangedError`, nothing written) unless the
caller passes a `TermAcceptance` saying who accepts the change and why; then each changed term is recorded
in `instrument_term_changes` (old and new value, when, origin, reason) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from emp_pipeline.domain.instrument_changes import InstrumentTermsChangedError, TermChange, term_changes
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta, SwapType, Weekday
from emp_pipeline.registry.models import Instrument, InstrumentTermChange, utc_now
from emp_pipeline.registry.statements import upsert_rows

# The terms the registry keeps (its columns): only these can be compared with what it stored.
REGISTRY_TERMS: tuple[str, ...] = tuple(
    column.name for column in Instrument.__table__.columns if column.name not in ("symbol", "updated_at")
)


@dataclass(frozen=True)
class TermAcceptance:
    """An explicit acceptance of changed terms: why (the operator's words) and who or which run."""

    reason: str
    accepted_by: str


@dataclass(frozen=True)
class InstrumentSync:
    """What `store_instruments` did: symbols added and term changes recorded (unchanged rows untouched)."""

    added: tuple[str, ...]
    changes: tuple[TermChange, ...]


def _row(meta: InstrumentMeta) -> dict[str, object]:
    return {
        "symbol": meta.symbol,
        "name": meta.name,
        "asset_class": AssetClass(meta.asset_class).value,
        "quote_currency": meta.quote_currency,
        "tick_size": float(meta.tick_size),
        "pip_position": int(meta.pip_position),
        "lot_size": float(meta.lot_size),
        "min_volume": float(meta.min_volume),
        "step_volume": float(meta.step_volume),
        "calendar": meta.calendar,
        "swap_long": float(meta.swap_long),
        "swap_short": float(meta.swap_short),
        "swap_type": SwapType(meta.swap_type).value,
        "swap_triple_weekday": int(meta.swap_triple_weekday),
        "spread_pips": float(meta.spread_pips),
        "updated_at": utc_now(),
    }


def pending_term_changes(session: Session, instruments: Iterable[InstrumentMeta]) -> list[TermChange]:
    """The stored terms ``instruments`` would change (new symbols are not changes)."""
    return term_changes(load_instruments(session), instruments, REGISTRY_TERMS)


def store_instruments(
    session: Session,
    instruments: Iterable[InstrumentMeta],
    *,
    origin: str,
    acceptance: TermAcceptance | None = None,
) -> InstrumentSync:
    """Add new instruments; change stored terms only with an ``acceptance``, recording every change."""
    instruments = list(instruments)
    stored = load_instruments(session)
    changes = term_changes(stored, instruments, REGISTRY_TERMS)
    if changes and acceptance is None:
        raise InstrumentTermsChangedError(
            origin, changes, "store them with a TermAcceptance that says who accepts them and why"
        )
    changed = {change.symbol for change in changes}
    known = {meta.symbol for meta in stored}
    added = tuple(meta.symbol for meta in instruments if meta.symbol not in known)
    upsert_rows(
        session,
        Instrument,
        [_row(meta) for meta in instruments if meta.symbol in changed or meta.symbol in added],
        keys=("symbol",),
    )
    if changes and acceptance is not None:
        now = utc_now()
        session.add_all(
            InstrumentTermChange(
                symbol=change.symbol,
                term=change.term,
                old_value=change.old,
                new_value=change.new,
                changed_at=now,
                origin=origin,
                reason=acceptance.reason,
                accepted_by=acceptance.accepted_by,
            )
            for change in changes
        )
        session.flush()
    return InstrumentSync(added, tuple(changes))


def load_instruments(session: Session) -> list[InstrumentMeta]:
    """Every stored instrument, by symbol, rebuilt (and so re-validated) as InstrumentMeta."""
    fields = [c for c in Instrument.__table__.columns if c.name != "updated_at"]
    rows = session.execute(select(*fields).order_by(Instrument.symbol)).mappings()
    return [
        InstrumentMeta(
            **{
                **row,
                "asset_class": AssetClass(row["asset_class"]),
                "swap_type": SwapType(row["swap_type"]),
                "swap_triple_weekday": Weekday(row["swap_triple_weekday"]),
            }
        )
        for row in rows
    ]
