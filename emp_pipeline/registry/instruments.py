"""The instruments aggregate: the universe's reference data (terms, calendars) by symbol."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta
from emp_pipeline.registry.models import Instrument, utc_now
from emp_pipeline.registry.statements import upsert_rows


def upsert_instruments(session: Session, instruments: Iterable[InstrumentMeta]) -> int:
    """Store the universe's reference data; a symbol already present gets its fields replaced."""
    now = utc_now()
    rows = [
        {
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
            "updated_at": now,
        }
        for meta in instruments
    ]
    return upsert_rows(session, Instrument, rows, keys=("symbol",))


def load_instruments(session: Session) -> list[InstrumentMeta]:
    """Every stored instrument, by symbol, rebuilt (and so re-validated) as InstrumentMeta."""
    fields = [c for c in Instrument.__table__.columns if c.name != "updated_at"]
    rows = session.execute(select(*fields).order_by(Instrument.symbol)).mappings()
    return [InstrumentMeta(**{**row, "asset_class": AssetClass(row["asset_class"])}) for row in rows]
