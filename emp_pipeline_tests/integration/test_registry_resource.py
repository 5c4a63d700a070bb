"""The Dagster DatabaseResource: configured by URL, it migrates the registry and hands out sessions."""

from __future__ import annotations

from emp_pipeline.defs.storage import DatabaseResource
from emp_pipeline.registry.control import KILL_SWITCH, flag_enabled, set_flag
from emp_pipeline.registry.migrate import current_revision, head_revision


def test_database_resource_upgrades_and_opens_sessions(registry_url: str) -> None:
    resource = DatabaseResource(url=registry_url)

    assert resource.upgrade() == head_revision() == current_revision(registry_url)
    assert resource.engine() is resource.engine()
    with resource.session() as session:
        set_flag(session, KILL_SWITCH, True, reason="test")
    with resource.session() as session:
        assert flag_enabled(session, KILL_SWITCH)
    try:
        with resource.session() as session:
            set_flag(session, KILL_SWITCH, False)
            raise RuntimeError("abort the unit of work")
    except RuntimeError:
        pass
    with resource.session() as session:
        assert flag_enabled(session, KILL_SWITCH)  # the failed block was rolled back
    resource.engine().dispose()
