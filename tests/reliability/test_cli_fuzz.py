"""Bad command lines (hypothesis), each run as a real subprocess: never a traceback.

An argument list with an option no command has is a usage error: exit status 2 and
a message saying what is wrong. Bad values of real options (a negative interval, a payload
that is not JSON, a schema name with a quote in it, a task module that does not
exist) end with status 1 or 2 and a one-line message. The server in ``DATABASE_URL``
does not exist (port 1), so nothing a command line gets through to can touch a
database; the commands that serve or start things (``admin``, ``embedded``, ``demo``)
only get usage errors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.worker.conftest import REPO

pytestmark = pytest.mark.slow

NOWHERE = "postgresql://nobody@127.0.0.1:1/nothing"
COMMANDS = ["migrate", "worker", "enqueue", "dlq", "demo", "embedded", "admin"]
OPTIONS = {
    # Options that take a value: a flag alone (``migrate --sql``) is a valid command.
    "migrate": ["--schema", "--log-level"],
    "worker": ["--schema", "--tasks", "--queue", "--poll-interval-ms", "--shutdown-timeout-secs"],
    "enqueue": ["--payload", "--queue", "--priority", "--run-at", "--max-attempts", "--job-key"],
    "dlq": ["--schema", "--log-level"],
}
INJECTION = ["x'; DROP TABLE jobs; --", 'a"b', "$1", "%s", "\\", "' OR '1'='1", "\u202e", "{}"]

_token = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12),
    st.sampled_from(INJECTION),
    st.integers(-(2**70), 2**70).map(str),
).filter(lambda t: t not in ("-h", "--help") and not t.startswith("-h"))


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFILL_")}
    env.update(
        {
            "DATABASE_URL": NOWHERE,
            "BACKFILL_DATA_DIR": str(cwd / "embedded"),  # never the repository's server
            "PYTHONPATH": str(REPO),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "backfill_sa", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
    )


# A subprocess per example: no shrinking phase, so a failure costs seconds, not minutes
# (the failing argument list is in the assertion message).
QUICK = settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@QUICK
@given(
    command=st.sampled_from([*COMMANDS, "no-such-command"]),
    before=st.lists(_token, max_size=3),
    after=st.lists(_token, max_size=3),
    unknown=st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=10),
)
def test_an_unknown_option_is_a_usage_error(
    tmp_path: Path, command: str, before: list[str], after: list[str], unknown: str
) -> None:
    argv = [command, *before, f"--zz-{unknown}", *after]
    done = _run(argv, tmp_path)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 2, (argv, done.returncode, done.stderr)
    assert "error" in done.stderr.lower(), done.stderr


@QUICK
@given(
    command=st.sampled_from(["migrate", "worker", "enqueue", "dlq"]),
    data=st.data(),
)
def test_bad_option_values_end_in_a_message_not_a_traceback(
    tmp_path: Path, command: str, data: st.DataObject
) -> None:
    options = data.draw(
        st.lists(st.tuples(st.sampled_from(OPTIONS[command]), _token), min_size=1, max_size=3)
    )
    argv = [command]
    for name, value in options:
        argv += [name, value]
    if command == "worker" and "--tasks" not in argv:
        argv += ["--tasks", data.draw(_token)]  # never a real module: nothing gets to run
    argv += data.draw(st.lists(_token, max_size=2))
    done = _run(argv, tmp_path)
    assert "Traceback" not in done.stderr + done.stdout, (argv, done.stderr)
    assert done.returncode in (1, 2), (argv, done.returncode, done.stderr)
    assert done.stderr.strip(), "a failure says why"
