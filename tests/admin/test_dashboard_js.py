"""The dashboard's script, run by Node.js against a tiny fake DOM and the real API's answers.

No browser is needed: the fake ``document`` records what the script builds, and the
fake ``fetch`` replays JSON the app really returned (and records what the buttons
send). Skipped when ``node`` is not installed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from typing import Any

import httpx
import pytest

from tests.admin.conftest import UTC, Rows

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

_HARNESS = r"""
const answers = JSON.parse(process.argv[2]);
const calls = [];
class Node_ {}
class El extends Node_ {
  constructor(tag) { super(); this.tag = tag; this.attrs = {}; this.kids = []; this.on = {};
    this.hidden = false; this.className = ""; }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  addEventListener(k, f) { this.on[k] = f; }
  append(...kids) { for (const k of kids) this.kids.push(k instanceof Node_ ? k : new Text_(k)); }
  replaceChildren(...kids) { this.kids = []; this.append(...kids); }
  set textContent(v) { this.kids = [new Text_(v)]; }
  get textContent() { return this.kids.map((k) => k.textContent).join(""); }
  all(tag) { return this.kids.flatMap((k) => k instanceof El
    ? (k.tag === tag ? [k] : []).concat(k.all(tag)) : []); }
}
class Text_ extends Node_ { constructor(v) { super(); this.value = String(v); }
  get textContent() { return this.value; } }
const byId = {};
globalThis.Node = Node_;
globalThis.document = { hidden: false, createElement: (t) => new El(t),
  getElementById: (id) => (byId[id] ??= new El("div")) };
globalThis.location = { pathname: "/admin" };
globalThis.confirm = () => true;
globalThis.setInterval = () => 0;
globalThis.fetch = async (url, opts) => {
  calls.push([opts.method, url]);
  const key = url.replace("/admin/api/", "").split("?")[0];
  return { ok: true, json: async () => answers[key] ?? {} };
};
const text = (id) => byId[id]?.textContent ?? "";
const rows = (id) => byId[id].all("tr").map((tr) => tr.all("td").map((td) => td.textContent));
(async () => {
  eval(process.argv[1]);
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  const pause = byId["queues"].all("button").findLast((b) => b.textContent === "pause");
  const del = byId["dlq"].all("button").find((b) => b.textContent === "delete");
  await pause.on.click();
  await del.on.click();
  console.log(JSON.stringify({ calls, queues: rows("queues"), workers: rows("workers"),
    dlq: rows("dlq"), cards: ["available", "scheduled", "running", "dead", "alive"].map(text),
    schema: text("schema"), status: text("status"), flash: text("flash") }));
})();
"""


def _run(harness: str, script: str, answers: dict[str, Any]) -> dict[str, Any]:
    """Run the page's script in the harness; return what it rendered and requested."""
    assert NODE is not None
    result = subprocess.run(
        [NODE, "-e", harness, script, json.dumps(answers)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen: dict[str, Any] = json.loads(result.stdout)
    return seen


def _script(page: str) -> str:
    (script,) = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    return str(script)


async def test_dashboard_script_renders_and_its_buttons_call_the_api(
    client: httpx.AsyncClient, rows: Rows, schema: str
) -> None:
    now = dt.datetime.now(UTC)
    await rows.add_job(queue="fast", run_at=now - dt.timedelta(minutes=3))
    await rows.add_job(queue="fast", state="running", locked_by="w1", locked_at=now)
    await rows.add_worker("w1", silent_for=dt.timedelta(seconds=2), queues={"fast": 4})
    entry = await rows.add_dead_letter(task="<b>resize</b>")
    answers = {
        "overview": (await client.get("/api/overview")).json(),
        "workers": (await client.get("/api/workers")).json(),
        "dlq": (await client.get("/api/dlq?limit=50")).json(),
    }
    script = _script((await client.get("/")).text)
    seen = _run(_HARNESS, script, answers)

    assert seen["schema"] == schema
    assert seen["cards"] == ["1", "0", "1", "1", "1"]
    assert "updated" in seen["status"]
    (bulk, fast) = seen["queues"]
    assert bulk[0] == "bulk"
    assert fast[:4] == ["fast", "1", "0", "1"]
    assert fast[4].startswith("3m")
    assert fast[7] == "active"
    assert fast[8] == "pause"
    (worker,) = seen["workers"]
    assert worker[0] == "w1"
    assert worker[3] == "fast=4"
    assert worker[7] == "alive"
    (dead,) = seen["dlq"]
    assert dead[:4] == [str(entry), "<b>resize</b>", "bulk", "max_attempts_exceeded"]
    assert dead[6] == "ValueError: boom"
    assert dead[7] == "requeuedelete"
    # Every request goes to the API under the page's own prefix.
    assert ["GET", "/admin/api/overview"] in seen["calls"]
    assert ["POST", "/admin/api/queues/fast/pause"] in seen["calls"]
    assert ["DELETE", f"/admin/api/dlq/{entry}"] in seen["calls"]
    assert f"entry {entry} deleted" in seen["flash"]


async def test_read_only_dashboard_shows_no_buttons(
    ro_client: httpx.AsyncClient, rows: Rows
) -> None:
    await rows.add_job(queue="fast")
    await rows.add_dead_letter()
    answers = {
        "overview": (await ro_client.get("/api/overview")).json(),
        "workers": (await ro_client.get("/api/workers")).json(),
        "dlq": (await ro_client.get("/api/dlq?limit=50")).json(),
    }
    script = _script((await ro_client.get("/")).text)
    harness = _HARNESS.replace("await pause.on.click();", "").replace("await del.on.click();", "")
    seen = _run(harness, script, answers)
    assert seen["queues"][0][-1] == ""
    assert seen["dlq"][0][-1] == ""
    assert all(method == "GET" for method, _ in seen["calls"])
