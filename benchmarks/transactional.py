"""W3tx, for backfill_sa: the W3 drain with transactional no-op tasks.

Each job's handler gets a transaction of its own (``ctx.session``) in which the worker
also completes the job: one transaction per job instead of the batched completions of
plain W3. Compare with W3 (ours and the peers) of the same run, at equal concurrency.
"""

from __future__ import annotations

from benchmarks.adapters import Adapter
from benchmarks.adapters.ours import OursAdapter
from benchmarks.drain import measure_drain
from benchmarks.workloads import WorkloadContext, load_queue

__all__ = ["w3_transactional"]

TASK = "noop_tx"
REGISTRY = "benchmarks.tasks:transactional_registry"


async def w3_transactional(adapter: Adapter, ctx: WorkloadContext) -> dict[str, object]:
    """W3tx: load ``jobs`` ``noop_tx`` jobs, then drain them with one worker.

    Raises:
        TypeError: ``adapter`` is not backfill_sa's.
        WorkerError: the worker exited or stalled.
    """
    if not isinstance(adapter, OursAdapter):
        raise TypeError(f"{adapter.name}: W3tx runs on backfill_sa only")
    load_s = await load_queue(adapter, ctx.jobs, checkpoint=ctx.checkpoint, task=TASK)
    poller = adapter.open_filtered_poller(TASK, "bench", 0)
    adapter.tasks_ref = REGISTRY
    try:
        result = measure_drain(
            adapter,
            queues={"bench": ctx.concurrency},
            workers=1,
            log_dir=ctx.log_dir,
            tag="ours-w3tx",
            poller=poller,
            poll_interval=ctx.poll_interval,
        )
    finally:
        del adapter.tasks_ref  # back to the class default
        poller.close()
    return {**result.as_dict(), "load_s": load_s}
