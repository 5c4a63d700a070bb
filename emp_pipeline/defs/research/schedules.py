"""Research schedule: the first day of a month closes the previous monthly period; evolve and measure it."""

from dagster import build_schedule_from_partitioned_job

from emp_pipeline.defs.research.jobs import evolution_job

evolution_schedule = build_schedule_from_partitioned_job(
    evolution_job, day_of_month=1, hour_of_day=23, name="evolution_schedule"
)
