"""One shape for asset-check results that count failing rows, so every such check reads alike in the UI."""

from collections.abc import Iterable

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue


def counted_check_result(
    *,
    passed: bool,
    description: str,
    failures: int,
    examples: Iterable[object],
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
    check_name: str | None = None,
) -> AssetCheckResult:
    """Carries the failure count and the first few failing rows, so a failed check says where to look.

    ``check_name`` is needed where an asset yields several checks; a standalone check knows its own.
    """
    return AssetCheckResult(
        check_name=check_name,
        passed=passed,
        severity=severity,
        description=description,
        metadata={"failures": failures, "examples": MetadataValue.json(list(examples))},
    )
