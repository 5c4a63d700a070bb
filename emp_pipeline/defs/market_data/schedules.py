"""Market-data schedules: the daily update after each day's close, the update after each intraday bar's close,
and the freshness check on weekdays."""

from datetime import timedelta

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
from emp_pipeline.domain.timeframes import Timeframe

# How long after a bar's close its update runs: the venue needs a moment to publish the closed bar.
BAR_UPDATE_LAG_MINUTES = 1


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


def bar_close_cron(timeframe: Timeframe) -> str:
    """A tick BAR_UPDATE_LAG_MINUTES after every close of an intraday bar on the UTC grid (H1: '1 * * * *',
    M15: '1-59/15 * * * *', H4: '1 */4 * * *')."""
    minutes = int(timeframe.duration / timedelta(minutes=1))
    lag = BAR_UPDATE_LAG_MINUTES
    if minutes == 1:
        return "* * * * *"
    if minutes < 60:
        return f"{lag}-59/{minutes} * * * *"
    return f"{lag} */{minutes // 60} * * *" if minutes > 60 else f"{lag} * * * *"


def bar_update_schedule(partitions: PipelinePartitions, timeframe: Timeframe) -> ScheduleDefinition | None:
    """After each intraday bar's close: re-materialize the chunk (trading day) holding the bar that just
    closed, so bars, features and regimes gain it, and the live sensor then trades it (one run per bar).
    None for daily and weekly bars, which the daily update covers.

    Idempotent like the daily update: the day's stored bars are replaced by the same bars plus the new one
    (from the venue with EMP_DATA_SOURCE=ctrader). A tick in closed time (an FX weekend) re-stores the last
    day unchanged, and the sensor finds no new bar.
    """
    if not timeframe.is_intraday:
        return None
    # An instant inside the bar that closed BAR_UPDATE_LAG_MINUTES before the tick.
    inside_closed_bar = timedelta(minutes=BAR_UPDATE_LAG_MINUTES, seconds=1)

    @schedule(
        name="bar_update_schedule",
        job=daily_update_job,
        cron_schedule=bar_close_cron(timeframe),
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"After each {timeframe} bar's close: bars, features and regimes of the trading day that "
        "holds it, so the live sensor trades the bar.",
    )
    def _bar_update(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        tick = context.scheduled_execution_time
        key = partition_to_update(partitions.bars, tick, inside_closed_bar)
        if key is None:
            return SkipReason(f"{tick} is outside the universe's date range")
        return RunRequest(partition_key=key, tags={"emp/trigger": "bar_update_schedule"})

    return _bar_update


freshness_schedule = ScheduleDefinition(
    name="freshness_schedule",
    job=freshness_job,
    cron_schedule="0 23 * * 1-5",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Weekday evenings: is the newest stored bar of every symbol current?",
)
