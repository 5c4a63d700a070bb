"""Pictures and tables for the UI's metadata: pure functions from frames to bytes or markdown."""
