"""Runs made in this process (`emp demo`, `emp run`) recorded as runs of the workspace's code location.

`JobDefinition.execute_in_process` records a run without a remote origin. Dagster's UI lists such a run on
the Runs page, but its Overview timeline groups runs by their origin's repository and location and drops a
run that has none (ui-core's `useRunsForTimeline`), and the run's page cannot find the job to re-execute.
So the run is created here with the origin a run launched from `make ui` gets (workspace.yaml's location),
then executed in this process exactly as `execute_in_process` does: the same in-process executor, the same
events. Dagster makes neither step public; its private imports are confined to this module, and
e2e/test_ui_runs.py checks the outcome through Dagster's own GraphQL (the timeline's query) against a code
server loaded from workspace.yaml, so a Dagster upgrade that changes them fails there.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import DagsterInstance, JobDefinition
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import execute_run
from dagster._core.execution.execution_result import ExecutionResult
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

# workspace.yaml's one code location (`python_module`), which `make ui` and `dagster dev` load.
DEFINITIONS_MODULE = "emp_pipeline.definitions"
CODE_LOCATION = "emp_pipeline"
# The tag the UI's Jobs pages list a job's runs by: repository@code location. Dagster adds it to runs it
# launches from a workspace; a run created here carries it too.
REPOSITORY_LABEL_TAG = ".dagster/repository"
REPOSITORY_LABEL = f"{SINGLETON_REPOSITORY_NAME}@{CODE_LOCATION}"


def workspace_job_origin(job_name: str) -> RemoteJobOrigin:
    """The origin Dagster gives a run of `job_name` launched from workspace.yaml's code location."""
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(module_name=DEFINITIONS_MODULE),
        location_name=CODE_LOCATION,
    )
    return RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=location, repository_name=SINGLETON_REPOSITORY_NAME
        ),
        job_name=job_name,
    )


def execute_as_workspace_run(
    job: JobDefinition,
    instance: DagsterInstance,
    run_config: Mapping[str, object],
    tags: Mapping[str, str],
) -> ExecutionResult:
    """Execute `job` in this process as a run of the workspace's location; failures are in the result."""
    in_process = job.as_ephemeral_job(resource_defs={}, input_values={})
    run = instance.create_run_for_job(
        job_def=in_process,
        run_config=run_config,
        tags={**job.run_tags, **tags, REPOSITORY_LABEL_TAG: REPOSITORY_LABEL},
        remote_job_origin=workspace_job_origin(job.name),
    )
    return execute_run(InMemoryJob(in_process), run, instance, raise_on_error=False)
