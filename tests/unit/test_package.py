"""The package's lazy API: names resolve to the same objects whatever loaded first."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_CHECK = textwrap.dedent(
    """
    import sys
    {first}
    import backfill_sa
    from backfill_sa import enqueue, enqueue_many, JobSpec
    from backfill_sa.enqueue import enqueue as real_enqueue
    assert enqueue is real_enqueue, enqueue
    assert backfill_sa.enqueue is real_enqueue, backfill_sa.enqueue
    assert callable(enqueue_many) and JobSpec.__name__ == "JobSpec"
    print("ok")
    """
)


@pytest.mark.parametrize(
    "first",
    [
        "import backfill_sa.enqueue",
        "from backfill_sa.enqueue import JobSpec",
        "import backfill_sa.worker",
        "from backfill_sa import enqueue",
        "",
    ],
)
def test_enqueue_is_the_function_whatever_was_imported_first(first: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHECK.format(first=first)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_importing_the_package_loads_no_sqlalchemy() -> None:
    code = "import sys, backfill_sa; print(sorted(m for m in sys.modules if 'sqlalchemy' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
