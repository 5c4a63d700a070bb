"""`emp run`: a job in this process on the local instance, a partition range as ONE run, from a fresh home.

A fresh home has an empty SQLite registry: the first run must migrate it (no "no such table: instruments").
"""

import io

import pytest
from dagster import DagsterInstance, RunsFilter
from sqlalchemy import inspect

from emp_pipeline.cli import main
from emp_pipeline.defs.storage import DatabaseResource
from emp_pipeline.job_runs import RunRequestError, select_partition_range
from emp_pipeline.registry.engine import make_engine
from emp_pipeline.registry.migrate import current_revision, head_revision

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def test_a_range_in_calendar_dates_selects_the_partitions_inside_it():
    keys = ["2010-01-04", "2010-01-05", "2010-01-06", "2010-01-08"]
    assert select_partition_range(keys, "2010-01-01", "2010-01-07") == ("2010-01-04", "2010-01-06")
    assert select_partition_range(keys, None, None) == ("2010-01-04", "2010-01-08")
    with pytest.raises(RunRequestError, match=r"partitions run 2010-01-04\.\.2010-01-08"):
        select_partition_range(keys, "2011-01-01", "2011-02-01")
    with pytest.raises(RunRequestError, match="is after"):
        select_partition_range(keys, "2010-01-06", "2010-01-05")
    months = ["2012-09", "2012-10", "2012-11", "2012-12", "2013-01"]
    assert select_partition_range(months, "2012-10-01", "2012-12-31") == ("2012-10", "2012-12")
    assert select_partition_range(months, "2012-10-15", "2012-11-02") == ("2012-10", "2012-11")


def test_the_embedded_registry_is_migrated_on_first_use(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    assert current_revision(url) is None

    DatabaseResource(url=url).engine()

    assert current_revision(url) == head_revision()
    engine = make_engine(url)
    try:
        assert "instruments" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_fresh_home_runs_the_universe_then_a_range_as_one_run(embedded_settings, monkeypatch):
    monkeypatch.setenv("EMP_HOME", str(embedded_settings.home))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    out = io.StringIO()

    assert main(["run", "universe_job"], out=out) == 0, out.getvalue()
    assert main(["run", "daily_update_job", "--from", "2013-02-23", "--to", "2013-03-01"], out=out) == 0

    text = out.getvalue()
    # Month partitions of daily bars: the days select the months that hold them.
    assert "- daily_update_job [2013-02..2013-03]" in text and "FAILED" not in text, text
    with DagsterInstance.local_temp(tempdir=str(embedded_settings.home / "dagster_home")) as instance:
        runs = instance.get_runs(RunsFilter(job_name="daily_update_job"))
    assert len(runs) == 1
    assert (runs[0].tags[RANGE_START_TAG], runs[0].tags[RANGE_END_TAG]) == ("2013-02", "2013-03")


def test_a_range_of_assets_that_run_one_partition_per_run_is_refused(embedded_settings, monkeypatch):
    monkeypatch.setenv("EMP_HOME", str(embedded_settings.home))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    out = io.StringIO()

    assert main(["run", "evolution_job", "--from", "2012-01", "--to", "2012-03"], out=out) == 2

    assert "evolved_strategies, strategy_performance run one partition per run" in out.getvalue()
    assert main(["run", "no_such_job"], out=out) == 2
    assert "the jobs are daily_update_job, evolution_job" in out.getvalue()
