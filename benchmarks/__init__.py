"""Benchmark suite for backfill_sa beside its Python peers (issue 4); not part of the tests.

Run ``python -m benchmarks run --help``. This package imports nothing at import time,
so that worker processes which load :mod:`benchmarks.tasks` stay as small as the
library itself.
"""
