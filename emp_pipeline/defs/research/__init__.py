"""Research: the walk-forward study, its report, and the gated champions."""
