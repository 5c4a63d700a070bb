"""Runs made in this process (`emp demo`, `emp run`) are listed on the UI's Jobs pages, as launched ones are.

The UI asks Dagster's GraphQL for a job's runs (`pipelineOrError { runs }`), which keeps only runs tagged with
the job's repository and code location. The query here goes through the same GraphQL schema against a code
server loaded from the repository's own workspace.yaml, so a wrong label or location name fails it.
"""

from __future__ import annotations

from pathlib import Path

from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from emp_pipeline.definitions import build_definitions
from emp_pipeline.demo import _run_job, demo_instance

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB_RUNS = """
query JobRuns($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { runs { runId status } }
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
