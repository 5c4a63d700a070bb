"""Local stand-ins for outside services (cTrader token endpoint), started by the tests themselves."""
