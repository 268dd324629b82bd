"""docs/migrations.md's recipe, followed in a fresh Alembic project up to ``alembic check``.

``alembic init``, the documented ``alembic.ini`` lines and ``env.py`` hooks, our
revisions applied, then the application's first ``alembic revision --autogenerate``:
it must land in the application's folder on a branch of its own (not stacked on
ours, not in our package folder), and ``alembic check`` must then find nothing to do.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from backfill_sa.dburl import sync_url
from backfill_sa.migrations import version_location

DOCS = Path(__file__).resolve().parents[2] / "docs" / "migrations.md"

MODELS = """\
from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Widget(Base):
    __tablename__ = "widgets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
"""

SECOND_MODEL = """

class Gadget(Base):
    __tablename__ = "gadgets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
"""


def _doc_block(language: str, containing: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    (block,) = [b for b in blocks if containing in b]
    return str(block)


@pytest.fixture
def app_database(database_url: str, admin_engine: Engine) -> Iterator[str]:
    """A new, empty database for the application; dropped afterwards."""
    name = f"bf_app_{uuid.uuid4().hex[:12]}"
    with admin_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield sync_url(database_url).set(database=name).render_as_string(hide_password=False)
    with admin_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _alembic(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _follow_the_docs(project: Path, url: str) -> None:
    """alembic init, then the documented alembic.ini lines and env.py hooks."""
    assert _alembic(project, "init", "migrations").returncode == 0
    (project / "myapp_models.py").write_text(MODELS)
    ini = project / "alembic.ini"
    config = ini.read_text()
    for line in _doc_block("ini", "version_locations").strip().splitlines():
        if line.startswith(("#", "[")) or "=" not in line:
            continue
        key = line.split("=", 1)[0].strip()
        config = re.sub(rf"(?m)^{re.escape(key)} = .*\n", "", config)
        config = config.replace("[alembic]\n", f"[alembic]\n{line}\n", 1)
    config = re.sub(r"(?m)^sqlalchemy.url = .*$", f"sqlalchemy.url = {url}", config)
    ini.write_text(config)
    documented = _doc_block("python", "revision_directives(")
    hooks = re.findall(
        r"^\s+(include_name=.*?|include_object=.*?|process_revision_directives=.*?),",
        documented,
        flags=re.MULTILINE,
    )
    assert len(hooks) == 3, documented
    env = project / "migrations" / "env.py"
    source = env.read_text()
    source = source.replace(
        "target_metadata = None",
        "from backfill_sa.migrations import include_name, include_object, revision_directives\n"
        "from myapp_models import Base\n\n"
        "target_metadata = Base.metadata",
    )
    configure = (
        "context.configure(\n"
        "            connection=connection, target_metadata=target_metadata\n"
        "        )"
    )
    assert configure in source
    calls = ", ".join(hook.split("  #")[0].strip() for hook in hooks)
    source = source.replace(
        configure,
        f"context.configure(connection=connection, target_metadata=target_metadata, {calls})",
    )
    env.write_text(source)


def test_the_first_app_revision_lands_in_the_apps_folder_on_its_own_branch(
    tmp_path: Path, app_database: str
) -> None:
    ours_before = sorted(Path(version_location()).glob("*.py"))
    _follow_the_docs(tmp_path, app_database)

    applied = _alembic(tmp_path, "upgrade", "heads")
    assert applied.returncode == 0, applied.stderr
    first = _alembic(tmp_path, "revision", "--autogenerate", "-m", "create widgets")
    assert first.returncode == 0, first.stderr

    mine = sorted((tmp_path / "migrations" / "versions").glob("*.py"))
    assert len(mine) == 1
    assert sorted(Path(version_location()).glob("*.py")) == ours_before
    body = mine[0].read_text()
    assert re.search(r"down_revision: .* = None", body), body
    assert "op.create_table(" in body
    assert "'widgets'" in body
    assert "backfill" not in body.replace("backfill_sa", "")  # nothing of ours

    assert _alembic(tmp_path, "upgrade", "heads").returncode == 0
    checked = _alembic(tmp_path, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No new upgrade operations detected" in checked.stdout

    # The next revision follows the application's head, not ours, without --head.
    (tmp_path / "myapp_models.py").write_text(MODELS + SECOND_MODEL)
    second = _alembic(tmp_path, "revision", "--autogenerate", "-m", "create gadgets")
    assert second.returncode == 0, second.stderr
    mine = sorted((tmp_path / "migrations" / "versions").glob("*.py"))
    assert len(mine) == 2
    first_id = re.search(r"^revision: str = '(\w+)'", body, flags=re.MULTILINE)
    assert first_id is not None
    (newer,) = [path for path in mine if path.read_text() != body]
    assert f"down_revision: Union[str, Sequence[str], None] = '{first_id.group(1)}'" in (
        newer.read_text()
    )
    assert sorted(Path(version_location()).glob("*.py")) == ours_before
