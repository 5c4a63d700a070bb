"""Backtest/live parity: replay the live execution path bar by bar and compare it with the backtest kernel."""
