"""The testing toolkit: jobs asserted and run inside a test's own transaction.

Everything a test needs to check what business code enqueued, run it through the
real handlers and see the effect, all rolled back with the test::

    from backfill_sa.testing import assert_enqueued, drain, DrainResult

    def test_order_sends_a_receipt(backfill_session, registry):
        place_order(backfill_session, order_id=42)          # enqueues send_receipt
        assert_enqueued(backfill_session, task="send_receipt", payload={"order_id": 42})
        assert drain(backfill_session, registry) == DrainResult(succeeded=1)

The pytest plugin (:mod:`backfill_sa.testing.plugin`, loaded through the
``pytest11`` entry point) provides the ``backfill_*`` fixtures; see
``docs/testing.md``.
"""

from __future__ import annotations

from backfill_sa.testing.assertions import (
    EnqueuedJob,
    assert_enqueued,
    assert_enqueued_async,
    enqueued_jobs,
    enqueued_jobs_async,
    payload_matches,
    refute_enqueued,
    refute_enqueued_async,
)
from backfill_sa.testing.drain import (
    DrainedJob,
    DrainResult,
    InlineMode,
    JobFailed,
    drain,
    drain_async,
)
from backfill_sa.testing.perform import PerformResult, perform, perform_async
from backfill_sa.testing.sessions import (
    MODES,
    Mode,
    inline,
    joined_async_sessionmaker,
    joined_sessionmaker,
    mode_info,
    outer_transaction,
    outer_transaction_async,
)

__all__ = [
    "MODES",
    "DrainResult",
    "DrainedJob",
    "EnqueuedJob",
    "InlineMode",
    "JobFailed",
    "Mode",
    "PerformResult",
    "assert_enqueued",
    "assert_enqueued_async",
    "drain",
    "drain_async",
    "enqueued_jobs",
    "enqueued_jobs_async",
    "inline",
    "joined_async_sessionmaker",
    "joined_sessionmaker",
    "mode_info",
    "outer_transaction",
    "outer_transaction_async",
    "payload_matches",
    "perform",
    "perform_async",
    "refute_enqueued",
    "refute_enqueued_async",
]
