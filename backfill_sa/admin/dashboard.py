"""The dashboard page: one HTML document, inline CSS and vanilla JS, no build step, no CDN.

The script polls the JSON API every 2 seconds (while the tab is visible) and builds
the tables with DOM calls (``textContent``, never ``innerHTML``), so task names,
queue names and error messages cannot inject markup. The page is served with a
Content-Security-Policy that allows exactly this script and style (by hash), calls
to its own origin only, and no framing (no clickjacking of its buttons).
"""

from __future__ import annotations

import base64
import hashlib

from starlette.responses import HTMLResponse

__all__ = ["dashboard_response"]

_STYLE = """
:root{--bg:#f7f7f8;--fg:#1c1c1f;--muted:#6b6b76;--card:#fff;--line:#e3e3e8;--accent:#2f5bd3;
--ok:#1f8a4c;--warn:#b26b00;--bad:#c0392b}
@media (prefers-color-scheme:dark){:root{--bg:#141417;--fg:#e8e8ec;--muted:#9a9aa6;
--card:#1d1d22;--line:#2c2c33;--accent:#7ea0ff;--ok:#4cc283;--warn:#e0a040;--bad:#ff6b5e}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;
background:var(--bg);color:var(--fg)}
header{display:flex;gap:12px;align-items:center;padding:12px 24px;
border-bottom:1px solid var(--line);background:var(--card)}
header h1{font-size:16px;margin:0}
header .grow{flex:1}
main{padding:16px 24px;max-width:1400px;margin:0 auto}
.muted{color:var(--muted)}
.badge{font-size:12px;padding:1px 8px;border-radius:10px;border:1px solid var(--line)}
.badge.ok{color:var(--ok);border-color:var(--ok)}
.badge.warn{color:var(--warn);border-color:var(--warn)}
.badge.bad{color:var(--bad);border-color:var(--bad)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px}
.card .n{font-size:26px;font-weight:600;font-variant-numeric:tabular-nums}
h2{font-size:15px;margin:24px 0 8px}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);
border-radius:8px;overflow:hidden}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);white-space:nowrap}
th{font-size:12px;font-weight:600;color:var(--muted)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.msg{max-width:420px;overflow:hidden;text-overflow:ellipsis}
td.empty{text-align:center;color:var(--muted);padding:14px}
tr:last-child td{border-bottom:0}
button{font:inherit;font-size:12px;padding:2px 10px;border-radius:6px;cursor:pointer;
border:1px solid var(--line);background:var(--bg);color:var(--fg);margin-left:4px}
button:hover{border-color:var(--accent);color:var(--accent)}
button.danger:hover{border-color:var(--bad);color:var(--bad)}
#flash{min-height:20px;margin-top:8px}
#flash.bad{color:var(--bad)}
code{font-size:12px}
"""

_SCRIPT = """
"use strict";
const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const $ = (id) => document.getElementById(id);
let frozen = false, busy = false, readOnly = true;

function el(tag, props, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const kid of kids) node.append(kid instanceof Node ? kid : String(kid ?? ""));
  return node;
}

async function api(method, path) {
  const res = await fetch(base + "api/" + path, {method, headers: {Accept: "application/json"}});
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.message || res.status + " " + res.statusText);
  return body;
}

function ago(seconds) {
  if (seconds === null || seconds === undefined || isNaN(seconds)) return "\\u2013";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}
const since = (iso, now) => (iso ? ago((Date.parse(now) - Date.parse(iso)) / 1000) : "\\u2013");
const num = (n) => Number(n).toLocaleString();
const badge = (text, kind) => el("span", {class: "badge " + kind}, text);
const td = (value, cls) => el("td", cls ? {class: cls} : {}, value);

function flash(text, bad) {
  const box = $("flash");
  box.textContent = text;
  box.className = bad ? "bad" : "muted";
}

function fill(id, rows, cols, empty) {
  const blank = el("tr", {}, el("td", {colspan: cols, class: "empty"}, empty));
  $(id).replaceChildren(...(rows.length ? rows : [blank]));
}

function action(label, method, path, done, question) {
  const cls = method === "DELETE" ? "danger" : "";
  return el("button", {type: "button", class: cls, onclick: async () => {
    if (question && !confirm(question)) return;
    try { await api(method, path); flash(done); } catch (e) { flash(e.message, true); }
    refresh();
  }}, label);
}

function render(ov, wk, dl) {
  readOnly = ov.read_only;
  $("schema").textContent = ov.schema;
  $("ro").hidden = !readOnly;
  for (const key of ["available", "scheduled", "running"]) $(key).textContent = num(ov.jobs[key]);
  $("dead").textContent = num(ov.dead_letters);
  $("alive").textContent = num(ov.workers.alive);
  $("total-workers").textContent = "of " + num(ov.workers.total) + " registered";
  fill("queues", ov.queues.map((q) => {
    const name = encodeURIComponent(q.name);
    const verb = q.paused ? "resume" : "pause";
    return el("tr", {}, td(q.name), td(num(q.available), "num"), td(num(q.scheduled), "num"),
      td(num(q.running), "num"), td(ago(q.oldest_available_age_seconds), "num"),
      td(num(q.dead_letters), "num"), td(q.concurrency ?? "\\u2013", "num"),
      td(q.paused ? badge("paused", "warn") : badge("active", "ok")),
      td(readOnly ? "" : action(verb, "POST", "queues/" + name + "/" + verb,
        "queue " + q.name + ": " + verb + "d")));
  }), 9, "No queues yet.");
  fill("workers", wk.workers.map((w) => el("tr", {},
    td(el("code", {}, w.id)), td(w.hostname), td(w.pid, "num"),
    td(Object.entries(w.queues || {}).map(([k, v]) => k + "=" + v).join(", ")),
    td(num(w.running), "num"), td(since(w.started_at, ov.now), "num"),
    td(ago(w.seconds_since_heartbeat) + " ago", "num"),
    td(w.alive ? badge("alive", "ok") : badge("silent", "bad")))), 8, "No workers registered.");
  $("dlq-count").textContent = dl.total > dl.entries.length
    ? "(newest " + dl.entries.length + " of " + num(dl.total) + ")" : "";
  fill("dlq", dl.entries.map((e) => {
    const error = [e.error_type, e.error_message].filter(Boolean).join(": ");
    const buttons = el("td");
    if (!readOnly) buttons.append(
      action("requeue", "POST", "dlq/" + e.id + "/requeue", "entry " + e.id + " requeued"),
      action("delete", "DELETE", "dlq/" + e.id, "entry " + e.id + " deleted",
        "Delete dead-letter entry " + e.id + " for good?"));
    return el("tr", {}, td(e.id, "num"), td(e.task), td(e.queue), td(e.failure_reason),
      td(e.failure_count, "num"), td(since(e.failed_at, ov.now) + " ago", "num"),
      el("td", {class: "msg", title: error}, error || "\\u2013"), buttons);
  }), 8, "The dead-letter queue is empty.");
}

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const [ov, wk, dl] = await Promise.all(
      [api("GET", "overview"), api("GET", "workers"), api("GET", "dlq?limit=50")]);
    render(ov, wk, dl);
    $("status").replaceChildren(badge("updated " + new Date().toLocaleTimeString(), "ok"));
  } catch (e) {
    $("status").replaceChildren(badge("error: " + e.message, "bad"));
  } finally {
    busy = false;
  }
}

$("freeze").addEventListener("click", () => {
  frozen = !frozen;
  $("freeze").textContent = frozen ? "resume refresh" : "pause refresh";
});
setInterval(() => { if (!frozen && !document.hidden) refresh(); }, 2000);
refresh();
"""

_BODY = """
<header>
  <h1>backfill_sa</h1><span class="muted">schema <code id="schema">…</code></span>
  <span id="ro" class="badge warn" hidden>read-only</span>
  <span class="grow"></span><span id="status"></span>
  <button id="freeze" type="button">pause refresh</button>
</header>
<main>
  <section class="cards">
    <div class="card"><div class="muted">Available</div>
      <div class="n" id="available">&ndash;</div></div>
    <div class="card"><div class="muted">Scheduled</div>
      <div class="n" id="scheduled">&ndash;</div></div>
    <div class="card"><div class="muted">Running</div>
      <div class="n" id="running">&ndash;</div></div>
    <div class="card"><div class="muted">Dead letters</div>
      <div class="n" id="dead">&ndash;</div></div>
    <div class="card"><div class="muted">Live workers</div>
      <div class="n" id="alive">&ndash;</div>
      <div class="muted" id="total-workers"></div></div>
  </section>
  <div id="flash"></div>
  <h2>Queues</h2>
  <table><thead><tr><th>Queue</th><th class="num">Available</th><th class="num">Scheduled</th>
    <th class="num">Running</th><th class="num">Oldest wait</th><th class="num">Dead</th>
    <th class="num">Concurrency</th><th>Status</th><th></th></tr></thead>
    <tbody id="queues"></tbody></table>
  <h2>Workers</h2>
  <table><thead><tr><th>Worker</th><th>Host</th><th class="num">PID</th><th>Queues</th>
    <th class="num">Running</th><th class="num">Up</th><th class="num">Heartbeat</th>
    <th>Status</th></tr></thead><tbody id="workers"></tbody></table>
  <h2>Dead letters <span class="muted" id="dlq-count"></span></h2>
  <table><thead><tr><th class="num">ID</th><th>Task</th><th>Queue</th><th>Reason</th>
    <th class="num">Failures</th><th class="num">Failed</th><th>Error</th><th></th></tr></thead>
    <tbody id="dlq"></tbody></table>
</main>
"""


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


_PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '<link rel="icon" href="data:,"><title>backfill_sa admin</title>'
    f"<style>{_STYLE}</style></head><body>{_BODY}<script>{_SCRIPT}</script></body></html>\n"
).encode()

_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def dashboard_response() -> HTMLResponse:
    """Return the dashboard page with its security headers."""
    return HTMLResponse(_PAGE, headers=_HEADERS)
