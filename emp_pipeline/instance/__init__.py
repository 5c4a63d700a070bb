"""The local Dagster instance: the run launcher the root dagster.yaml names, and `make ui`'s `dagster dev`."""
