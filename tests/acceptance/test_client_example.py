"""examples/producer.py (the snippet of docs/client.md) runs, so it cannot rot."""

from __future__ import annotations

import re

from sqlalchemy import create_engine, func, select

from backfill_sa.dburl import sync_url
from backfill_sa.models import Job
from tests.acceptance.conftest import REPO, base_env, run_command


def test_docs_client_snippet_is_examples_producer() -> None:
    text = (REPO / "docs" / "client.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)

    assert (REPO / "examples" / "producer.py").read_text() in blocks


def test_producer_example_runs(fresh_database: str) -> None:
    done = run_command(["examples/producer.py"], env=base_env(fresh_database))

    assert done.code == 0, done.stderr
    assert re.search(r"^job \d+: inserted$", done.stdout, flags=re.MULTILINE)
    assert "0 dead letter(s)" in done.stdout
    engine = create_engine(sync_url(fresh_database))
    with engine.connect() as conn:
        tasks = dict(conn.execute(select(Job.task, func.count()).group_by(Job.task)).all())
    engine.dispose()
    assert tasks == {
        "send_email": 2,
        "page_oncall": 1,
        "resize": 2,
        "reindex": 1_000,
        "send_receipt": 1,
    }
