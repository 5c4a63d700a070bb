"""Stage -> check -> publish: a frame that fails a blocking check never becomes what anything else reads.

Dagster's blocking checks stop downstream steps, but a check evaluated after the asset's output has been
written stops nothing that reads storage directly (the live job reads the Parquet store, the registry is read
by everyone). So the assets here compute their frame, evaluate every check on it, report the evaluations,
and only then yield the output the IO manager publishes (and write the registry). When a blocking check fails
the frame goes to quarantine instead (``<data dir>/_quarantine/<asset>/<run id>/``, with the reasons) and
the step fails with a `Failure` naming the checks; published Parquet, registry rows and materialized
partitions stay exactly as they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, Failure, MetadataValue

from emp_pipeline.defs.check_results import counted_check_result
from emp_pipeline.domain.bar_quality import BarCheckOutcome, bar_check
from emp_pipeline.storage.datasets import Dataset


@dataclass(frozen=True)
class StagedCheck:
    """One check evaluated on a staged frame, and whether its failure must stop the publication."""

    name: str
    blocking: bool
    passed: bool
    description: str
    failures: int = 0
    examples: tuple[object, ...] = ()

    @classmethod
    def from_bar_outcome(cls, outcome: BarCheckOutcome) -> StagedCheck:
        return cls(
            outcome.name,
            bar_check(outcome.name).blocking,
            outcome.passed,
            outcome.description,
            outcome.failures,
            outcome.examples,
        )

    def result(self) -> AssetCheckResult:
        return counted_check_result(
            check_name=self.name,
            passed=self.passed,
            description=self.description,
            failures=self.failures,
            examples=self.examples,
            severity=AssetCheckSeverity.ERROR if self.blocking else AssetCheckSeverity.WARN,
        )


def quarantine(
    data_dir: Path | str, dataset: Dataset, run_id: str, frame: pd.DataFrame, failed: Sequence[StagedCheck]
) -> Path:
    """Keep a rejected frame and why, for the operator to inspect; nothing reads this directory."""
    store = dataset.quarantine_store(data_dir, run_id)
    store.write_all(frame)
    reasons = [
        {"check": check.name, "description": check.description, "examples": list(map(str, check.examples))}
        for check in failed
    ]
    (store.directory / "reasons.json").write_text(json.dumps(reasons, indent=2) + "\n")
    return store.directory


def report_then_gate(
    context: AssetExecutionContext,
    dataset: Dataset,
    frame: pd.DataFrame,
    checks: Sequence[StagedCheck],
    data_dir: Path | str,
) -> Iterator[AssetCheckResult]:
    """Yield every check's result, then raise `Failure` (after quarantining) if a blocking one failed.

    Call it with ``yield from`` before yielding the asset's output: the evaluations reach Dagster's event log
    either way, and the output (and so the IO manager's write) is never reached when a blocking check fails.
    """
    for check in checks:
        yield check.result()
    failed = [check for check in checks if check.blocking and not check.passed]
    if not failed:
        return
    kept = quarantine(data_dir, dataset, context.run.run_id, frame, failed)
    names = ", ".join(check.name for check in failed)
    raise Failure(
        description=(
            f"{dataset.name}: blocking check(s) {names} failed; nothing was published (store, registry and "
            f"materialized partitions unchanged). "
            + "; ".join(
                f"{check.name}: {check.description} ({', '.join(map(str, check.examples))})"
                for check in failed
            )
        ),
        metadata={
            "failed_checks": MetadataValue.json([check.name for check in failed]),
            "quarantined_frame": MetadataValue.path(str(kept)),
            "quarantined_rows": len(frame),
        },
    )
