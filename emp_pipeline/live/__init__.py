"""Live execution without Dagster: one tick turns the latest bar into orders (see engine.run_live_tick)."""
