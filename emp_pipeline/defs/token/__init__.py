"""Token: the cTrader OAuth token lifecycle (resource, refresh job, sensors)."""
