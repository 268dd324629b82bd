"""A sample application's Alembic env.py, the way the docs tell users to write it.

Copied into a temporary directory by the tests. The application keeps its tables
and its version table in ``$APP_SCHEMA``; our revisions come in through
``version_locations`` (see the ``alembic.ini`` the test writes) and keep to
``$BACKFILL_SCHEMA``. With ``SAMPLE_APP_WITHOUT_BACKFILL_FILTERS=1`` the
application forgets our filters, to show what they prevent.
"""

from __future__ import annotations

import os

from alembic import context
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from app_models import make_base  # type: ignore[import-not-found,unused-ignore]
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import SchemaItem

from backfill_sa.migrations import include_name, include_object, revision_directives

APP_SCHEMA = os.environ["APP_SCHEMA"]
target_metadata = make_base(APP_SCHEMA).metadata


def app_include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """The application's own rule: only look at the schemas it knows about."""
    if type_ == "schema":
        return name in (APP_SCHEMA, os.environ["BACKFILL_SCHEMA"])
    return True


def app_include_object(
    obj: SchemaItem,
    name: str | None,
    type_: NameFilterType,
    reflected: bool,
    compare_to: SchemaItem | None,
) -> bool:
    """The application's own rule: a hand-managed audit table is not in its models."""
    return not (type_ == "table" and name == "legacy_audit")


def run_migrations_online() -> None:
    """Migrate, or compare for autogenerate, on the application's database."""
    without_ours = os.environ.get("SAMPLE_APP_WITHOUT_BACKFILL_FILTERS") == "1"
    # pyproject.toml configurations carry no URL (and no [alembic] ini section).
    url = os.environ.get("SAMPLE_APP_DATABASE_URL") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    assert url
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=APP_SCHEMA,
            include_schemas=True,
            include_name=app_include_name if without_ours else include_name(app_include_name),
            include_object=(
                app_include_object if without_ours else include_object(app_include_object)
            ),
            process_revision_directives=revision_directives(),
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
