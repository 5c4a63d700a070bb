"""Operational control flags (e.g. the kill switch): on/off, who set them and why."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from emp_pipeline.registry.models import ControlFlag, utc_now
from emp_pipeline.registry.records import FlagRecord
from emp_pipeline.registry.statements import record_from_row, upsert_rows

KILL_SWITCH = "kill_switch"


def set_flag(session: Session, name: str, enabled: bool, *, reason: str = "", updated_by: str = "") -> None:
    """Turn an operational flag (e.g. KILL_SWITCH) on or off, recording who did it and why."""
    row = {
        "name": name,
        "enabled": bool(enabled),
        "reason": reason,
        "updated_at": utc_now(),
        "updated_by": updated_by,
    }
    upsert_rows(session, ControlFlag, [row], keys=("name",))


def flag_enabled(session: Session, name: str) -> bool:
    """Whether a flag is on; a flag never set is off."""
    return bool(session.scalar(select(ControlFlag.enabled).where(ControlFlag.name == name)))


def get_flag(session: Session, name: str) -> FlagRecord | None:
    row = session.get(ControlFlag, name, populate_existing=True)
    if row is None:
        return None
    return record_from_row(FlagRecord, row)
