"""Way in (a): our revisions inside an application's own Alembic history, run by the real CLI.

The sample application (``sample_app/``: its own Base, its own revision, an ``env.py``
written the way ``docs/migrations.md`` says) is copied into a temporary directory
with an ``alembic.ini`` that adds our versions folder to ``version_locations``.
Each test gives the application and our tables schemas of their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.schema import CreateSchema

import backfill_sa
from backfill_sa.errors import MigrationError
from backfill_sa.migrations import VERSION_LOCATION, upgrade, version_location
from tests.migrations.helpers import HEAD, OUR_TABLES, tables_in, versions_in

SAMPLE = Path(__file__).resolve().parent / "sample_app"
REPO = Path(backfill_sa.__file__).resolve().parent.parent

INI = """\
[alembic]
script_location = %(here)s/migrations
version_locations = {locations}
path_separator = {separator}
prepend_sys_path = .
sqlalchemy.url = {url}
"""

# The two documented ways to name our folder in an application's alembic.ini.
LOCATION_STYLES = {
    # "package:path" holds a colon, so split version_locations on spaces.
    "package_path": ("%(here)s/migrations/versions " + VERSION_LOCATION, "space"),
    # A plain absolute path works with Alembic's default `path_separator = os`.
    "absolute_path": (
        "%(here)s/migrations/versions" + os.pathsep + version_location().replace("%", "%%"),
        "os",
    ),
    # pyproject.toml (Alembic >= 1.16): a TOML list is never split.
    "pyproject_toml": ('"%(here)s/migrations/versions", "' + VERSION_LOCATION + '"', ""),
}

PYPROJECT = """\
[tool.alembic]
script_location = "%(here)s/migrations"
version_locations = [{locations}]
prepend_sys_path = ["."]
"""


@dataclass(frozen=True)
class SampleApp:
    """A sample application on disk and the schemas it uses."""

    root: Path
    app_schema: str
    our_schema: str
    url: str

    def alembic(self, *args: str, without_our_filters: bool = False) -> tuple[int, str]:
        """Run the ``alembic`` CLI in the application's directory; return (exit code, output)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["APP_SCHEMA"] = self.app_schema
        env["BACKFILL_SCHEMA"] = self.our_schema
        env["SAMPLE_APP_WITHOUT_BACKFILL_FILTERS"] = "1" if without_our_filters else "0"
        ini = self.root / "alembic.ini"
        config = ["-c", str(ini)] if ini.exists() else []  # else pyproject.toml in cwd
        if not ini.exists():
            env["SAMPLE_APP_DATABASE_URL"] = self.url  # TOML configuration holds no URL
        done = subprocess.run(
            [sys.executable, "-m", "alembic", *config, *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr


def _make_app(
    root: Path, style: str, url: str, engine: Engine, new_schema: Callable[[str], str]
) -> SampleApp:
    (root / "migrations" / "versions").mkdir(parents=True)
    shutil.copy(SAMPLE / "app_models.py", root / "app_models.py")
    shutil.copy(SAMPLE / "env.py", root / "migrations" / "env.py")
    shutil.copy(
        SAMPLE / "versions" / "app0001_orders.py",
        root / "migrations" / "versions" / "app0001_orders.py",
    )
    locations, separator = LOCATION_STYLES[style]
    if style == "pyproject_toml":
        (root / "pyproject.toml").write_text(PYPROJECT.format(locations=locations))
    else:
        ini = INI.format(locations=locations, separator=separator, url=url.replace("%", "%%"))
        (root / "alembic.ini").write_text(ini)
    app = SampleApp(root, app_schema=new_schema("app"), our_schema=new_schema("bf"), url=url)
    with engine.begin() as conn:
        conn.execute(CreateSchema(app.app_schema))  # the application's schema exists already
    return app


@pytest.fixture
def sample_app(
    tmp_path: Path, sync_db_url: str, admin_engine: Engine, new_schema: Callable[[str], str]
) -> SampleApp:
    """The sample application, naming our folder as ``package:path``."""
    return _make_app(tmp_path, "package_path", sync_db_url, admin_engine, new_schema)


def test_heads_shows_both_branches(sample_app: SampleApp) -> None:
    code, output = sample_app.alembic("heads")
    assert code == 0, output
    assert "app0001 (app) (head)" in output
    assert f"{HEAD} (backfill_sa) (head)" in output


@pytest.mark.parametrize("style", sorted(LOCATION_STYLES))
def test_upgrade_heads_check_downgrade_base(
    tmp_path: Path,
    sync_db_url: str,
    admin_engine: Engine,
    new_schema: Callable[[str], str],
    style: str,
) -> None:
    app = _make_app(tmp_path, style, sync_db_url, admin_engine, new_schema)

    code, output = app.alembic("upgrade", "heads")
    assert code == 0, output
    # Both revisions are recorded in the application's own version table ...
    assert versions_in(admin_engine, app.app_schema) == {"app0001", HEAD}
    assert tables_in(admin_engine, app.app_schema) == {"orders", "legacy_audit", "alembic_version"}
    # ... and ours built our tables in our schema, with no version table of ours.
    assert tables_in(admin_engine, app.our_schema) == OUR_TABLES

    # The application's autogenerate proposes nothing, for our objects or its own.
    code, output = app.alembic("check")
    assert code == 0, output
    assert "No new upgrade operations detected" in output

    code, output = app.alembic("downgrade", "base")
    assert code == 0, output
    assert tables_in(admin_engine, app.our_schema) == set()
    assert tables_in(admin_engine, app.app_schema) == {"alembic_version"}
    assert versions_in(admin_engine, app.app_schema) == set()


def test_without_our_filters_autogenerate_would_drop_our_tables(
    sample_app: SampleApp, admin_engine: Engine
) -> None:
    code, output = sample_app.alembic("upgrade", "heads")
    assert code == 0, output
    code, output = sample_app.alembic("check", without_our_filters=True)
    assert code != 0
    assert "New upgrade operations detected" in output
    for table in OUR_TABLES:
        assert f"('remove_table', Table('{table}'" in output
    # The application's own filter still holds: its audit table is never proposed.
    assert "legacy_audit" not in output


def test_branch_label_upgrades_ours_alone(sample_app: SampleApp, admin_engine: Engine) -> None:
    code, output = sample_app.alembic("upgrade", "backfill_sa@head")
    assert code == 0, output
    assert versions_in(admin_engine, sample_app.app_schema) == {HEAD}
    assert tables_in(admin_engine, sample_app.our_schema) == OUR_TABLES
    assert tables_in(admin_engine, sample_app.app_schema) == {"alembic_version"}

    code, output = sample_app.alembic("downgrade", "backfill_sa@base")
    assert code == 0, output
    assert tables_in(admin_engine, sample_app.our_schema) == set()


def test_sql_mode_of_the_application_includes_our_ddl(sample_app: SampleApp) -> None:
    code, output = sample_app.alembic("upgrade", "heads", "--sql")
    assert code == 0, output
    assert f"CREATE TABLE {sample_app.app_schema}.orders" in output
    assert f"CREATE TABLE {sample_app.our_schema}.jobs" in output


def test_start_up_upgrade_refuses_tables_the_application_history_manages(
    sample_app: SampleApp, admin_engine: Engine
) -> None:
    """Mixing way (a) with way (c) is refused with a message, not a half-applied migration."""
    code, output = sample_app.alembic("upgrade", "heads")
    assert code == 0, output
    with pytest.raises(MigrationError, match=r"alembic upgrade heads") as caught:
        upgrade(admin_engine, schema=sample_app.our_schema)
    assert f"no {sample_app.our_schema}.alembic_version" in str(caught.value)
    assert tables_in(admin_engine, sample_app.our_schema) == OUR_TABLES
