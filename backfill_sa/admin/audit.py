"""The audit log of the admin app: one record per change, saying who, what and how many.

Records go to the ``backfill_sa.admin.audit`` logger at INFO (refused logins at
WARNING), with the details in ``extra`` (``admin_user``, ``admin_action``,
``admin_target``, ``admin_count``, ``admin_ids``, ``admin_dry_run``) for structured
handlers. Configuring where they go is the application's job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

__all__ = ["audit", "audit_login"]

logger = logging.getLogger("backfill_sa.admin.audit")


def audit(
    user: str,
    action: str,
    target: str,
    count: int,
    *,
    ids: Sequence[int] = (),
    dry_run: bool = False,
) -> None:
    """Log one change: ``user`` did ``action`` to ``target``, touching ``count`` rows.

    Args:
        user: the principal's name.
        action: what was done (``queue.pause``, ``dlq.requeue``, ...).
        target: what it was done to (a queue, an id, a filter).
        count: how many rows it changed (what it would change, for a dry run).
        ids: the ids it changed, when there are any.
        dry_run: nothing was changed; ``count`` is what would have been.
    """
    logger.info(
        "admin audit: %s %s %s: %d%s",
        user,
        action,
        target,
        count,
        " (dry run, nothing changed)" if dry_run else "",
        extra={
            "admin_user": user,
            "admin_action": action,
            "admin_target": target,
            "admin_count": count,
            "admin_ids": list(ids),
            "admin_dry_run": dry_run,
        },
    )


def audit_login(user: str | None, client: str) -> None:
    """Log a dashboard login: ``user`` signed in, or (``None``) a wrong token was given."""
    if user is None:
        logger.warning(
            "admin audit: refused login from %s (wrong token)",
            client,
            extra={"admin_action": "login.refused", "admin_target": client},
        )
    else:
        logger.info(
            "admin audit: %s signed in from %s",
            user,
            client,
            extra={"admin_user": user, "admin_action": "login", "admin_target": client},
        )
