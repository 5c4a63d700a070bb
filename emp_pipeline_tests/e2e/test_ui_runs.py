"""Runs made in this process (`emp demo`, `emp run`) show in the UI as launched ones do: on the Jobs pages and
on the Overview timeline.

The UI asks Dagster's GraphQL for a job's runs (`pipelineOrError { runs }`), which keeps only runs tagged with
the job's repository and code location; its timeline asks `runsOrError` for each run's `repositoryOrigin` and
drops a run without one. The queries here go through the same GraphQL schema against a code server loaded
from the repository's own workspace.yaml, so a wrong label, origin or location name fails them.
"""

from __future__ import annotations

import time
from pathlib import Path

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from emp_pipeline.definitions import build_definitions
from emp_pipeline.demo import _run_job, demo_instance
from emp_pipeline.instance.workspace_runs import CODE_LOCATION, workspace_job_origin

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB_RUNS = """
query JobRuns($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { runs { runId status } }
  }
}
"""
REEXECUTE = """
mutation Reexecute($parentRunId: String!) {
  launchPipelineReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: ALL_STEPS}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
REEXECUTION_TIMEOUT_S = 180
# The timeline's fields (ui-core useRunsForTimeline's RunTimelineFragment), for the runs of one job.
TIMELINE_RUNS = """
query TimelineRuns($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs {
      results { id pipelineName status repositoryOrigin { repositoryName repositoryLocationName } }
    }
  }
}
"""


def test_an_in_process_run_is_listed_on_its_job_page(embedded_settings) -> None:
    instance = demo_instance(embedded_settings)
    step = _run_job(build_definitions(embedded_settings), instance, "universe_job", None)
    assert step.success
    (run,) = instance.get_run_records()
    selector = {
        "pipelineName": "universe_job",
        "repositoryName": "__repository__",
        "repositoryLocationName": "emp_pipeline",
    }
    with define_out_of_process_context(str(REPO_ROOT / "workspace.yaml"), None, instance) as context:
        result = execute_dagster_graphql(context, JOB_RUNS, {"selector": selector})
    assert result.errors is None, result.errors
    job = result.data["pipelineOrError"]
    assert job["__typename"] == "Pipeline", job
    assert job["runs"] == [{"runId": run.dagster_run.run_id, "status": "SUCCESS"}]


def test_an_in_process_run_is_on_the_timeline_under_the_workspace_location(
    embedded_settings, monkeypatch
) -> None:
    monkeypatch.setenv("EMP_HOME", str(embedded_settings.home))  # where the code server's re-execution writes
    instance = demo_instance(embedded_settings)
    step = _run_job(build_definitions(embedded_settings), instance, "universe_job", None)
    assert step.success
    (run,) = instance.get_run_records()
    variables = {"filter": {"pipelineName": "universe_job", "statuses": ["SUCCESS"]}}
    with define_out_of_process_context(str(REPO_ROOT / "workspace.yaml"), None, instance) as context:
        result = execute_dagster_graphql(context, TIMELINE_RUNS, variables)
        workspace_location = context.get_code_location(CODE_LOCATION)
        # The run names the very origin the UI's own launches get, so its page's Re-execute finds the job.
        origin = workspace_job_origin("universe_job").repository_origin.code_location_origin
        assert workspace_location.origin == origin
        relaunch = execute_dagster_graphql(context, REEXECUTE, {"parentRunId": run.dagster_run.run_id})
        assert relaunch.errors is None, relaunch.errors
        launched = relaunch.data["launchPipelineReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        # The local instance queues it; dequeue it as `make ui`'s daemon does, through the run launcher.
        instance.launch_run(launched["run"]["runId"], context)
        child = _finished(instance, launched["run"]["runId"])
    assert child.status == DagsterRunStatus.SUCCESS
    assert child.parent_run_id == run.dagster_run.run_id
    assert result.errors is None, result.errors
    assert result.data["runsOrError"]["results"] == [
        {
            "id": run.dagster_run.run_id,
            "pipelineName": "universe_job",
            "status": "SUCCESS",
            "repositoryOrigin": {
                "repositoryName": "__repository__",
                "repositoryLocationName": "emp_pipeline",
            },
        }
    ]


def _finished(instance: DagsterInstance, run_id: str) -> DagsterRun:
    """The run once it ended (the code server executes it in a subprocess)."""
    deadline = time.monotonic() + REEXECUTION_TIMEOUT_S
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run
        time.sleep(1)
    logs = [entry.message for entry in instance.all_logs(run_id)][-10:]
    raise AssertionError(f"run {run_id} did not finish within {REEXECUTION_TIMEOUT_S} s: {run}; {logs}")
