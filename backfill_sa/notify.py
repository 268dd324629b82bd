"""The LISTEN/NOTIFY contract between enqueue and the worker.

Enqueue issues ``pg_notify(channel_for(schema), queue)`` in the same transaction as
the insert; PostgreSQL delivers it only on commit, so a rolled-back job wakes nobody.
One channel per schema keeps deployments (and tests) that share a database apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backfill_sa.schema_name import DEFAULT_SCHEMA

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["cancel_channel_for", "channel_for", "done_channel_for", "schema_of"]


def channel_for(schema: str) -> str:
    """Return the NOTIFY channel that wakes workers of ``schema``."""
    return f"backfill_jobs_{schema}"


def done_channel_for(schema: str) -> str:
    """Return the channel announcing finished jobs of ``schema`` (payload: their ids,
    comma-separated, or empty for a batch too large to name)."""
    return f"backfill_done_{schema}"


def cancel_channel_for(schema: str) -> str:
    """Return the channel asking workers of ``schema`` to stop a running job (payload:
    the job id)."""
    return f"backfill_cancel_{schema}"


def schema_of(connection: Connection | AsyncConnection) -> str:
    """Return the schema that ``backfill`` maps to on ``connection``.

    Reads the connection's ``schema_translate_map`` execution option; without one the
    tables live in the default schema ``backfill``.
    """
    # Imported here: the worker uses this module and loads no SQLAlchemy.
    from sqlalchemy import Connection

    sync = connection if isinstance(connection, Connection) else connection.sync_connection
    options = sync.get_execution_options() if sync is not None else {}
    mapping = options.get("schema_translate_map") or {}
    target = mapping.get(DEFAULT_SCHEMA, DEFAULT_SCHEMA)
    return str(target) if target is not None else DEFAULT_SCHEMA
