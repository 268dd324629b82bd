"""``python -m backfill_sa enqueue TASK``: one job, under the same task defaults as Python.

With ``--tasks package.module:registry`` the task's registered queue, priority,
max_attempts and retry policy apply to what the flags leave out (exactly what
``enqueue(session, task, registry=registry)`` does); without it, the library
defaults. A job sent to a queue that no registered worker serves gets a warning on
stderr: it will wait until a worker serves that queue.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from backfill_sa.cli_ops import emit, load_registry, run_in_session, schema_name

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from backfill_sa.enqueue import EnqueueResult

__all__ = ["cmd_enqueue"]


def cmd_enqueue(args: argparse.Namespace) -> int:
    """``enqueue TASK``: enqueue one job in its own transaction and print its id.

    Raises:
        CommandError: ``--tasks`` cannot be loaded, the schema is not migrated or the
            database is unreachable.
        JobValidationError: an option breaks a rule, or the task is not in the
            ``--tasks`` registry; nothing is written.
    """
    from backfill_sa.enqueue import enqueue_many_async, job_spec

    schema = schema_name(args)
    registry = load_registry(args.tasks) if args.tasks else None
    given: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("queue", "priority", "run_at", "max_attempts", "job_key")
    }
    spec = job_spec(args.task, args.payload, registry, **given)  # validated before connecting

    async def work(session: AsyncSession) -> tuple[EnqueueResult, list[str]]:
        from sqlalchemy import select

        from backfill_sa.statements.overview import queues_served

        (result,) = await enqueue_many_async(session, [spec])
        served = list((await session.execute(select(queues_served().subquery()))).scalars())
        return result, served

    result, served = run_in_session(schema, work)
    if spec.queue not in served:
        known = (
            f"registered workers serve {', '.join(sorted(served))}"
            if served
            else "no worker is registered"
        )
        print(
            f"backfill_sa enqueue: warning: no worker serves queue {spec.queue!r} "
            f"({known}); the job waits until one does",
            file=sys.stderr,
        )
    emit(
        {
            "id": result.id,
            "outcome": result.outcome.value,
            "task": spec.task,
            "queue": spec.queue,
            "priority": spec.row.priority,
            "max_attempts": spec.row.max_attempts,
        },
        as_json=args.json,
        text=[f"job {result.id}: {result.outcome.value} (queue {spec.queue})"],
    )
    return 0
