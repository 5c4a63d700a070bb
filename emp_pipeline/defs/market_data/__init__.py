"""Market data: the instrument universe and daily bars (assets, checks, jobs, schedules, resource)."""
