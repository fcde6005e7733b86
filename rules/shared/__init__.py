"""Helpers two or more rules share (no rule module imports another rule module)."""
