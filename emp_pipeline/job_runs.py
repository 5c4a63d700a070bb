"""`emp run JOB [--from KEY] [--to KEY]`: one job, one run, in this process, on the local Dagster instance.

Why it exists: the raw Dagster commands that run a job in-process (`dagster job execute`, `dagster asset
materialize --partition-range`) print Dagster's `dg` SupersessionWarning, and `dagster job backfill` submits
one run per partition, each recomputing years of look-back (and Dagster 1.13's backfill page cannot show the
statuses of such a backfill of single-run assets). A range here is ONE run tagged with its first and last
partition key, the run the single-run backfill policy of the pipeline's partitioned assets is written for. The
run is recorded in the same storage `make ui` shows: the instance of DAGSTER_HOME when it is set, else the one
`emp demo` writes under EMP_HOME (the root dagster.yaml's `.emp/dagster_home` with the default EMP_HOME).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import TextIO

from dagster import DagsterInstance, JobDefinition

from emp_pipeline.settings import Settings


class RunRequestError(ValueError):
    """The job or the partition range asked for does not exist; the message says what does."""


def select_partition_range(keys: Sequence[str], first: str | None, last: str | None) -> tuple[str, str]:
    """The first and last partition key within [first, last] (ISO keys: string order is time order).

    Either bound may be omitted (the job's first or last key), and neither has to be a key itself: a range
    given in calendar dates selects the partitions inside it, and the month partitions of daily bars
    (``2012-10``) that hold its days (each key is compared with the bounds cut to its own length).
    """
    if not keys:
        raise RunRequestError("the job has no partitions")
    low, high = first or keys[0], last or keys[-1]
    if low > high:
        raise RunRequestError(f"--from {low} is after --to {high}")
    inside = [key for key in keys if low[: len(key)] <= key <= high[: len(key)]]
    if not inside:
        raise RunRequestError(
            f"no partition between {low} and {high}: the job's partitions run {keys[0]}..{keys[-1]}"
        )
    return inside[0], inside[-1]


def _require_single_run_policy(job: JobDefinition) -> None:
    """A range is one run only for assets written for it (BackfillPolicy.single_run), as in Dagster's CLI."""
    per_partition = sorted(
        key.to_user_string()
        for key in job.asset_layer.executable_asset_keys
        # BackfillPolicy.single_run() is the policy without a partition limit per run.
        if (policy := job.asset_layer.get(key).backfill_policy) is None
        or policy.max_partitions_per_run is not None
    )
    if per_partition:
        raise RunRequestError(
            f"{', '.join(per_partition)} run one partition per run: give one partition (--from K --to K), "
            f"or queue one run per partition with `DAGSTER_HOME=$PWD .venv/bin/dagster job backfill -j "
            f"{job.name} --from FIRST --to LAST --noprompt` (the daemon of `make ui` launches them)"
        )


def run_instance(settings: Settings) -> DagsterInstance:
    """DAGSTER_HOME's instance when it is set, else the embedded one `emp demo` and `make ui` share."""
    from emp_pipeline.demo import demo_instance

    if os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.get()
    return demo_instance(settings)


def run_job_command(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from emp_pipeline.definitions import build_definitions
    from emp_pipeline.demo import _report, _run_job

    defs = build_definitions(settings)
    jobs = sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__"))
    if args.job not in jobs:
        out.write(f"emp run: no job {args.job!r}; the jobs are {', '.join(jobs)}\n")
        return 2
    job = defs.resolve_job_def(args.job)
    with run_instance(settings) as instance:
        partition_range = None
        try:
            if job.partitions_def is not None:
                keys = job.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
                partition_range = select_partition_range(keys, args.first, args.last)
                if partition_range[0] != partition_range[1]:
                    _require_single_run_policy(job)
            elif args.first or args.last:
                raise RunRequestError("the job is not partitioned: leave out --from and --to")
        except RunRequestError as error:
            out.write(f"emp run {args.job}: {error}\n")
            return 2
        step = _report(out, _run_job(defs, instance, args.job, partition_range))
    return 0 if step.success else 1


def add_run_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="run one job in this process on the local Dagster instance; a partition range is one run",
    )
    run.add_argument("job", help="the job's name (daily_update_job, evolution_job, research_job, ...)")
    run.add_argument(
        "--from", dest="first", help="first partition (a day or a month); default: the job's first"
    )
    run.add_argument("--to", dest="last", help="last partition, inclusive; default: the job's last")
    run.set_defaults(handler=run_job_command)
