"""instrument_universe never changes a stored instrument's terms as a side effect (issue 15, point 3)."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance
from sqlalchemy import select

from emp_pipeline.definitions import build_definitions
from emp_pipeline.domain.instruments import AssetClass
from emp_pipeline.registry.engine import session_scope, shared_engine
from emp_pipeline.registry.instruments import load_instruments
from emp_pipeline.registry.migrate import upgrade_database
from emp_pipeline.registry.models import InstrumentTermChange
from emp_pipeline.settings import SAMPLE_UNIVERSE_FILE, Settings

GOOG_EQUITY = "asset_class: equity"


def _settings(tmp_path: Path) -> Settings:
    universe = tmp_path / "universe.yaml"
    universe.write_text(SAMPLE_UNIVERSE_FILE.read_text())
    settings = Settings.from_env({"EMP_HOME": str(tmp_path / "home"), "EMP_UNIVERSE_FILE": str(universe)})
    settings.home.mkdir(parents=True)
    upgrade_database(settings.database_url)
    return settings


def _materialize(settings: Settings, instance: DagsterInstance, config: dict | None = None):
    return (
        build_definitions(settings)
        .resolve_job_def("universe_job")
        .execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"ops": {"instrument_universe": {"config": config}}} if config else None,
        )
    )


def _goog(settings: Settings):
    with session_scope(shared_engine(settings.database_url)) as session:
        return next(meta for meta in load_instruments(session) if meta.symbol == "GOOG")


def _flip_goog_to_crypto(settings: Settings) -> None:
    text = settings.data.universe_file.read_text()
    goog = text.index("symbol: GOOG")
    tail = (
        text[goog:]
        .replace(GOOG_EQUITY, "asset_class: crypto", 1)
        .replace("calendar: XNAS", "calendar: 24x7", 1)
    )
    settings.data.universe_file.write_text(text[:goog] + tail)


def test_a_changed_term_fails_the_run_by_name_until_accepted_with_a_reason_and_is_recorded(tmp_path):
    settings = _settings(tmp_path)
    instance = DagsterInstance.ephemeral()
    assert _materialize(settings, instance).success
    stored = _goog(settings)
    assert (stored.asset_class, stored.calendar) == (AssetClass.EQUITY, "XNAS")

    _flip_goog_to_crypto(settings)
    refused = _materialize(settings, instance)

    assert not refused.success
    message = refused.get_step_failure_events()[0].step_failure_data.error.message
    assert (
        "changes 2 stored instrument terms (GOOG asset_class: equity -> crypto; GOOG calendar: XNAS -> 24x7)"
        in message
    )
    assert "accept_term_changes: true and a reason" in message
    assert _goog(settings) == stored
    assert not _materialize(settings, instance, {"accept_term_changes": True}).success  # no reason given
    assert _goog(settings) == stored

    accepted = _materialize(
        settings, instance, {"accept_term_changes": True, "reason": "GOOG tokenised 24x7"}
    )

    assert accepted.success
    assert (_goog(settings).asset_class, _goog(settings).calendar) == (AssetClass.CRYPTO, "24x7")
    with session_scope(shared_engine(settings.database_url)) as session:
        history = session.scalars(
            select(InstrumentTermChange)
            .where(InstrumentTermChange.symbol == "GOOG")
            .order_by(InstrumentTermChange.changed_at, InstrumentTermChange.id)
        ).all()
    assert [(r.term, r.old_value, r.new_value, r.reason) for r in history] == [
        ("asset_class", "equity", "crypto", "GOOG tokenised 24x7"),
        ("calendar", "XNAS", "24x7", "GOOG tokenised 24x7"),
    ]
    assert {r.accepted_by for r in history} == {f"dagster run {accepted.run_id}"}
    assert all(r.origin.startswith(f"universe file {settings.data.universe_file} (sha256 ") for r in history)
    assert _materialize(settings, instance).success  # the accepted terms are now the stored ones
