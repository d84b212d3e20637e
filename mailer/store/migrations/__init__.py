"""Alembic migrations shipped with rekindle-mail; HEAD names the newest one."""

# Kept in step with versions/ by tests/test_store.py (saves importing Alembic on every run).
HEAD = "0007"
