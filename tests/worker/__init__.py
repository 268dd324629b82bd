"""Worker runtime tests against a real PostgreSQL."""
