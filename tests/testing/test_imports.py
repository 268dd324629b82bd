"""The toolkit and the framework helpers load only what they need."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("backfill_sa", ("fastapi", "flask", "pytest", "backfill_sa.testing")),
        ("backfill_sa.integrations.fastapi", ("fastapi", "starlette")),
        ("backfill_sa.integrations.flask", ("flask", "flask_sqlalchemy", "click")),
        ("backfill_sa.testing", ("pytest", "fastapi", "flask")),
    ],
)
def test_importing_loads_no_framework(module: str, absent: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print(sorted(m for m in {absent!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert done.stdout.strip() == "[]"
