"""Runnable examples; each one runs in CI (tests/acceptance/test_examples.py)."""
