"""Application services: load, decide, save."""
