"""Market-data schedules: the daily update after the US close, and the freshness check on weekday evenings."""

from dagster import DefaultScheduleStatus, ScheduleDefinition, build_schedule_from_partitioned_job

from emp_pipeline.defs.market_data.jobs import daily_update_job, freshness_job

# 22:30 UTC is after the US cash close in both summer and winter time; each tick runs yesterday's partition.
daily_update_schedule = build_schedule_from_partitioned_job(
    daily_update_job, hour_of_day=22, minute_of_hour=30, name="daily_update_schedule"
)

freshness_schedule = ScheduleDefinition(
    name="freshness_schedule",
    job=freshness_job,
    cron_schedule="0 23 * * 1-5",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Weekday evenings: is the newest stored bar of every symbol current?",
)
