"""Where an application's new Alembic revision goes: on its own branch, in its own folder.

An application that runs our revisions from its own history has our versions folder
in its ``version_locations``. Left alone, Alembic stacks the application's first
``alembic revision --autogenerate`` on our head (the only head there is) and, since it
puts a revision beside its parent, writes the file into *our* package folder (in
site-packages for a normal install). :func:`revision_directives` returns a
``process_revision_directives`` hook that prevents it::

    from backfill_sa.migrations import include_name, include_object, revision_directives

    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_name=include_name(),
        include_object=include_object(),
        process_revision_directives=revision_directives(),
    )

With it, a new revision whose base was not chosen (``--head`` left at its default)
is based on the application's own head, or starts the application's own branch
when it has none yet, and a revision whose folder was not chosen
(``--version-path``) is written to the application's first version location.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

__all__ = ["RevisionDirectivesFn", "revision_directives"]

RevisionDirectivesFn: TypeAlias = Callable[["MigrationContext", Any, list[Any]], None]
"""Alembic's ``process_revision_directives`` signature: (context, revision, directives)."""

_OURS = Path(__file__).resolve().parent / "versions"


def revision_directives(next_hook: RevisionDirectivesFn | None = None) -> RevisionDirectivesFn:
    """Return a ``process_revision_directives`` hook that keeps new revisions off our branch.

    For each revision Alembic is about to write:

    * ``head`` left at Alembic's default (``None`` or ``"head"``): set to the one head that is
      not backfill_sa's, or to ``"base"`` (a new, independent branch) when the
      application has no revision yet. With several application heads it is left
      alone, and Alembic asks which one, as usual.
    * ``version_path`` not given: set to the first entry of ``version_locations``
      that is not our folder (or ``<script_location>/versions`` without any).

    ``head`` and ``--version-path`` given on the command line are respected. For a
    plain ``alembic revision`` (no autogenerate) to go through this hook as well,
    set ``revision_environment = true`` in ``alembic.ini``.

    Args:
        next_hook: the application's own ``process_revision_directives``, called
            first with the same arguments.

    Returns:
        A callable to pass as ``process_revision_directives=`` to
        ``context.configure``.

    Example:
        ``context.configure(..., process_revision_directives=revision_directives())``
    """

    def hook(context: MigrationContext, revision: Any, directives: list[Any]) -> None:
        if next_hook is not None:
            next_hook(context, revision, directives)
        script_dir = context.script
        if script_dir is None:
            return
        for directive in directives:
            if getattr(directive, "head", "") in (None, "head"):  # --head not given
                mine = _application_heads(script_dir)
                if len(mine) == 1:
                    directive.head = mine[0]
                elif not mine:
                    directive.head = "base"
            if getattr(directive, "version_path", "") is None:
                directive.version_path = str(_application_folder(script_dir))

    return hook


def _is_ours(path: str | Path | None) -> bool:
    return path is not None and Path(path).resolve().parent == _OURS


def _application_heads(script_dir: ScriptDirectory) -> list[str]:
    heads = []
    for head in script_dir.get_heads():
        script = script_dir.get_revision(head)
        if script is not None and not _is_ours(script.path):
            heads.append(head)
    return heads


def _application_folder(script_dir: ScriptDirectory) -> Path:
    from alembic.util import coerce_resource_to_filename

    for location in _locations(script_dir.version_locations):
        folder = Path(coerce_resource_to_filename(location)).resolve()
        if folder != _OURS:
            return folder
    return Path(script_dir.dir, "versions").resolve()


def _locations(entries: Iterable[str] | None) -> list[str]:
    return [str(entry) for entry in entries or ()]
