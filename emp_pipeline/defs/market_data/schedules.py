"""Market-data schedules: the daily update after each day's close, and the freshness check on weekdays."""

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from emp_pipeline.defs.market_data.jobs import daily_update_job, freshness_job
from emp_pipeline.defs.partitions import PipelinePartitions, partition_to_update


def daily_update_schedule(partitions: PipelinePartitions) -> ScheduleDefinition:
    """Each evening (or after each FX day): re-materialize the chunk that holds the day that just closed.

    With month partitions that is the current month, again each evening: the run replaces the month's
    stored bars by what the source returns (the same bars plus the new one), so it is idempotent, and a
    month still in progress is normal. Features and regimes follow for the same chunk.
    """
    chunking = partitions.chunking

    @schedule(
        name="daily_update_schedule",
        job=daily_update_job,
        cron_schedule=chunking.update_cron,
        execution_timezone=chunking.timezone,
        default_status=DefaultScheduleStatus.STOPPED,
        description="After each trading day's close: bars, features and regimes of the partition (month of "
        "daily bars, trading day of intraday bars) that holds the day.",
    )
    def _daily_update(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        key = partition_to_update(partitions.bars, context.scheduled_execution_time)
        if key is None:
            return SkipReason(f"{context.scheduled_execution_time} is outside the universe's date range")
        return RunRequest(partition_key=key, tags={"emp/trigger": "schedule"})

    return _daily_update


freshness_schedule = ScheduleDefinition(
    name="freshness_schedule",
    job=freshness_job,
    cron_schedule="0 23 * * 1-5",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Weekday evenings: is the newest stored bar of every symbol current?",
)
