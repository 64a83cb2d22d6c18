"""Read models and feeds built from the event log."""
