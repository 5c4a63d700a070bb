"""`emp kill-switch on|off|status`: the operator's brake, stored in the registry so every run sees it.

The live job reads the flag at every tick; while it is on no order that adds exposure is sent (closing
orders still are, see domain.risk). Who set it and why are recorded with it.
"""

from __future__ import annotations

import getpass
from typing import TextIO

from emp_pipeline.registry.control import KILL_SWITCH, get_flag, set_flag
from emp_pipeline.registry.engine import session_scope, shared_engine
from emp_pipeline.registry.migrate import upgrade_database


def kill_switch_command(
    database_url: str, action: str, out: TextIO, *, reason: str = "", updated_by: str | None = None
) -> int:
    """Turn the kill switch on or off (or show it); returns the process exit code."""
    if action not in ("on", "off", "status"):
        out.write(f"unknown kill-switch action {action!r}: use on, off or status\n")
        return 2
    upgrade_database(database_url)
    engine = shared_engine(database_url)
    with session_scope(engine) as session:
        if action != "status":
            set_flag(
                session,
                KILL_SWITCH,
                action == "on",
                reason=reason,
                updated_by=updated_by if updated_by is not None else _user(),
            )
        flag = get_flag(session, KILL_SWITCH)
    if flag is None:
        out.write("kill switch: off (never set)\n")
        return 0
    state = "ON: no new exposure will be sent" if flag.enabled else "off"
    detail = f" (by {flag.updated_by or 'unknown'} at {flag.updated_at:%Y-%m-%d %H:%M:%S} UTC"
    detail += f", reason: {flag.reason})" if flag.reason else ")"
    out.write(f"kill switch: {state}{detail}\n")
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
