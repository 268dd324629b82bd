"""A per-session hook run after each enqueue: how the testing toolkit's inline mode works.

An object stored in ``session.info[ENQUEUE_HOOK_KEY]`` is told the ids of the jobs
each enqueue call wrote (inserted or replaced, not the ``unchanged`` ones), after
the write and before the call returns. It lives on one session (or on the sessions
of one ``sessionmaker`` through its ``info=``), so nothing global changes; without
it an enqueue costs one dictionary lookup more. ORM-added ``Job`` rows are not
reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from backfill_sa.job_writer import EnqueueOutcome, EnqueueResult

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["ENQUEUE_HOOK_KEY", "EnqueueHook", "observed", "observed_async"]

ENQUEUE_HOOK_KEY = "backfill_sa.enqueue_hook"
"""Key of the hook in ``Session.info``."""


class EnqueueHook(Protocol):
    """Told about the jobs each enqueue call wrote, in the enqueuing session."""

    def after_enqueue(self, session: Session, job_ids: list[int]) -> None:
        """Called by the sync API after the jobs were written."""

    async def after_enqueue_async(self, session: AsyncSession, job_ids: list[int]) -> None:
        """Called by the async API after the jobs were written."""


def _written(results: list[EnqueueResult]) -> list[int]:
    return [r.id for r in results if r.outcome is not EnqueueOutcome.UNCHANGED]


def observed(session: Session, results: list[EnqueueResult]) -> list[EnqueueResult]:
    """Tell ``session``'s hook, if it has one, about ``results``; return them.

    Raises:
        Exception: whatever the hook raises (inline mode: a handler that failed).
    """
    hook: EnqueueHook | None = session.info.get(ENQUEUE_HOOK_KEY)
    if hook is not None:
        hook.after_enqueue(session, _written(results))
    return results


async def observed_async(
    session: AsyncSession, results: list[EnqueueResult]
) -> list[EnqueueResult]:
    """:func:`observed` for an AsyncSession.

    Raises:
        Exception: whatever the hook raises (inline mode: a handler that failed).
    """
    hook: EnqueueHook | None = session.info.get(ENQUEUE_HOOK_KEY)
    if hook is not None:
        await hook.after_enqueue_async(session, _written(results))
    return results
