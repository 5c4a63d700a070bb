"""Live: the execution job, what triggers it, and the broker it trades through."""
