"""Reliability under faults and load: restarts, PgBouncer, many workers, stalls, bad input."""
