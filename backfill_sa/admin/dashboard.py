"""The dashboard page: one HTML document, inline CSS and vanilla JS, no build step, no CDN.

The script polls the JSON API every 2 seconds (while the tab is visible) and builds
the tables with DOM calls (``textContent``, never ``innerHTML``), so task names,
queue names and error messages cannot inject markup. Every change asks for a
confirmation first; bulk dead-letter actions first run as a dry run, so the question
says how many entries they will touch. The page is served with a
Content-Security-Policy that allows exactly this script and style (by hash), calls to
its own origin only, and no framing (no clickjacking of its buttons). Tables scroll
inside their own box, so the page itself fits a 390 px wide phone screen.
"""

from __future__ import annotations

from starlette.responses import HTMLResponse

from backfill_sa.admin.protocol import page_headers
from backfill_sa.states import FailureReason

__all__ = ["dashboard_response"]

_STYLE = """
:root{--bg:#f7f7f8;--fg:#1c1c1f;--muted:#6b6b76;--card:#fff;--line:#e3e3e8;--accent:#2f5bd3;
--ok:#1f8a4c;--warn:#b26b00;--bad:#c0392b}
@media (prefers-color-scheme:dark){:root{--bg:#141417;--fg:#e8e8ec;--muted:#9a9aa6;
--card:#1d1d22;--line:#2c2c33;--accent:#7ea0ff;--ok:#4cc283;--warn:#e0a040;--bad:#ff6b5e}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;
background:var(--bg);color:var(--fg)}
header{display:flex;flex-wrap:wrap;gap:8px 12px;align-items:center;padding:10px 16px;
border-bottom:1px solid var(--line);background:var(--card)}
header h1{font-size:16px;margin:0}
header .grow{flex:1}
header form{margin:0}
main{padding:12px 16px;max-width:1400px;margin:0 auto}
.muted{color:var(--muted)}
.badge{font-size:12px;padding:1px 8px;border-radius:10px;border:1px solid var(--line);
white-space:nowrap}
.badge.ok{color:var(--ok);border-color:var(--ok)}
.badge.warn{color:var(--warn);border-color:var(--warn)}
.badge.bad{color:var(--bad);border-color:var(--bad)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:10px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .n{font-size:24px;font-weight:600;font-variant-numeric:tabular-nums}
h2{font-size:15px;margin:22px 0 8px}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:8px;background:var(--card)}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);white-space:nowrap}
th{font-size:12px;font-weight:600;color:var(--muted)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.msg{max-width:360px;overflow:hidden;text-overflow:ellipsis}
td.empty{text-align:center;color:var(--muted);padding:14px}
tr:last-child td{border-bottom:0}
button,select,input{font:inherit;font-size:13px;padding:3px 10px;border-radius:6px;
border:1px solid var(--line);background:var(--bg);color:var(--fg)}
button{cursor:pointer;margin:1px 2px}
button:hover{border-color:var(--accent);color:var(--accent)}
button.danger:hover{border-color:var(--bad);color:var(--bad)}
.filters{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:0 0 8px}
.filters input{width:140px}
#flash{min-height:20px;margin-top:8px}
#flash.bad{color:var(--bad)}
svg.spark{display:block}
svg.spark polyline{fill:none;stroke:var(--accent);stroke-width:1.5}
code{font-size:12px}
button.link{border:0;background:none;color:var(--accent);padding:0;margin:0;
font-variant-numeric:tabular-nums;text-decoration:underline}
#detail{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:4px 14px 12px;margin-top:12px}
#detail .grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:8px 16px}
#detail h3{font-size:13px;margin:10px 0 4px;color:var(--muted)}
#detail ol{margin:0;padding-left:20px}
pre{margin:0;font-size:12px;background:var(--bg);border:1px solid var(--line);border-radius:6px;
padding:6px 8px;max-height:240px;overflow:auto;white-space:pre-wrap;word-break:break-all}
"""

_SCRIPT = """
"use strict";
const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const $ = (id) => document.getElementById(id);
const rates = new Map();  // queue -> completed jobs per minute, oldest first (30 minutes)
let frozen = false, busy = false, readOnly = true, auth = "token", rounds = 0;

function el(tag, props, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const kid of kids) node.append(kid instanceof Node ? kid : String(kid ?? ""));
  return node;
}

async function api(method, path, body) {
  const init = {method, headers: {Accept: "application/json"}};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(base + "api/" + path, init);
  if (res.status === 401 && auth === "token") { location.assign(base + "login"); }
  const answer = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(answer.message || res.status + " " + res.statusText);
  return answer;
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

function spark(values) {
  const samples = values.length > 1 ? values : [values[0] ?? 0, values[0] ?? 0];
  const ns = "http://www.w3.org/2000/svg", w = 90, h = 20;
  const svg = document.createElementNS(ns, "svg");
  for (const [k, v] of [["class", "spark"], ["width", w], ["height", h],
    ["viewBox", "0 0 " + w + " " + h], ["role", "img"]]) svg.setAttribute(k, v);
  const top = Math.max(1, ...samples);
  const step = samples.length > 1 ? w / (samples.length - 1) : 0;
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", samples.map((v, i) =>
    (i * step).toFixed(1) + "," + (h - 1 - (v / top) * (h - 2)).toFixed(1)).join(" "));
  svg.append(line);
  const title = document.createElementNS(ns, "title");
  title.textContent = "completed per minute, last " + values.length + " minutes: " +
    values.join(", ");
  svg.append(title);
  return svg;
}

// A button that asks first, calls the API, says what happened and refreshes.
function action(label, method, path, done, question, extra) {
  const cls = method === "DELETE" || label === "cancel" ? "danger" : "";
  return el("button", {type: "button", class: cls, "data-action": label, ...(extra || {}),
    onclick: async () => {
      if (question && !confirm(question)) return;
      try { await api(method, path); flash(done); } catch (e) { flash(e.message, true); }
      refresh();
    }}, label);
}

// The detail panel: every field of one job, its result, error and timeline.
const pretty = (value) => (value === null || value === undefined
  ? "\u2013" : JSON.stringify(value, null, 2));

async function showJob(id) {
  try {
    const {job} = await api("GET", "jobs/" + id);
    $("detail-title").textContent = "Job " + job.id + ": " + job.task + " (" + job.state + ")";
    const steps = [["enqueued", job.created_at], ["due", job.run_at],
      ["claimed by " + (job.locked_by || "a worker"), job.locked_at],
      ["cancel asked", job.cancel_requested_at], ["finished", job.finished_at],
      ["last change", job.updated_at]].filter(([, at]) => at)
      .sort((a, b) => Date.parse(a[1]) - Date.parse(b[1]));
    $("detail-timeline").replaceChildren(...steps.map(([what, at]) =>
      el("li", {}, what + ": " + new Date(at).toLocaleString())));
    $("detail-attempts").textContent = "attempt " + job.attempts + " of " + job.max_attempts +
      " \u00b7 queue " + job.queue + " \u00b7 priority " + job.priority;
    $("detail-result").textContent = pretty(job.result);
    $("detail-error").textContent = pretty(job.last_error);
    $("detail-payload").textContent = pretty(job.payload);
    $("detail").hidden = false;
    $("detail").scrollIntoView();
  } catch (e) { flash(e.message, true); }
}
const jobLink = (id) => el("td", {class: "num"}, el("button", {type: "button", class: "link",
  "data-action": "detail", onclick: () => showJob(id)}, id));

function dlqFilter() {
  const filter = {};
  for (const key of ["task", "queue", "reason"]) {
    const value = $("f-" + key).value.trim();
    if (value) filter[key] = value;
  }
  return filter;
}

function selectedIds() {
  return [...document.querySelectorAll("input.pick:checked")].map((b) => Number(b.value));
}

async function bulk(verb, selection, what) {
  try {
    const preview = await api("POST", "dlq/" + verb, {...selection, dry_run: true});
    const n = verb === "requeue" ? preview.requeued_ids.length : preview.deleted;
    if (n === 0) { flash("No dead-letter entries match " + what + ".", true); return; }
    const skipped = verb === "requeue" && preview.skipped_ids.length
      ? " (" + preview.skipped_ids.length + " stay: their job_key is taken)" : "";
    if (!confirm(verb[0].toUpperCase() + verb.slice(1) + " " + n + " dead-letter " +
      (n === 1 ? "entry" : "entries") + " (" + what + ")" + skipped + "?")) return;
    const done = await api("POST", "dlq/" + verb, selection);
    const m = verb === "requeue" ? done.requeued_ids.length : done.deleted;
    flash(m + " " + (m === 1 ? "entry" : "entries") + " " + verb + "d");
  } catch (e) { flash(e.message, true); }
  refresh();
}

function queueRow(q) {
  const name = encodeURIComponent(q.name);
  const verb = q.paused ? "resume" : "pause";
  const samples = rates.get(q.name) || [];
  return el("tr", {"data-queue": q.name}, td(q.name), td(num(q.available), "num"),
    td(num(q.scheduled), "num"), td(num(q.running), "num"),
    td(ago(q.oldest_available_age_seconds), "num"), el("td", {}, spark(samples)),
    td(num(q.dead_letters), "num"), td(q.concurrency ?? "\\u2013", "num"),
    td(q.paused ? badge("paused", "warn") : badge("active", "ok")),
    td(readOnly ? "" : action(verb, "POST", "queues/" + name + "/" + verb,
      "queue " + q.name + ": " + verb + "d",
      verb[0].toUpperCase() + verb.slice(1) + " queue " + q.name + "?")));
}

function render(ov, wk, run, bad, done, dl, st) {
  readOnly = ov.read_only;
  auth = ov.auth;
  $("logout-form").hidden = auth !== "token";
  $("insecure").hidden = auth !== "none";
  $("schema").textContent = ov.schema;
  $("user").textContent = ov.user;
  $("ro").hidden = !readOnly;
  for (const key of ["available", "scheduled", "running"]) $(key).textContent = num(ov.jobs[key]);
  $("dead").textContent = num(ov.dead_letters);
  $("alive").textContent = num(ov.workers.alive);
  $("total-workers").textContent = "of " + num(ov.workers.total) + " registered";
  fill("queues", ov.queues.map(queueRow), 10, "No queues yet.");
  fill("running-jobs", run.jobs.map((j) => el("tr", {"data-job": j.id}, jobLink(j.id),
    td(j.task), td(j.queue), td(el("code", {}, j.locked_by || "")),
    td(since(j.locked_at, ov.now), "num"), td(j.attempts + "/" + j.max_attempts, "num"),
    td(readOnly ? "" : action("cancel", "POST", "jobs/" + j.id + "/cancel",
      "job " + j.id + ": cancel requested", "Cancel running job " + j.id + " (" + j.task + ")?")))),
    7, "Nothing is running.");
  $("running-count").textContent = run.total > run.jobs.length
    ? "(" + run.jobs.length + " of " + num(run.total) + ")" : "";
  fill("failing", bad.jobs.map((j) => {
    const error = [j.error_type, j.error_message].filter(Boolean).join(": ");
    return el("tr", {"data-job": j.id}, jobLink(j.id), td(j.task), td(j.queue), td(j.state),
      td(j.attempts + "/" + j.max_attempts, "num"), td(since(j.updated_at, ov.now) + " ago"),
      el("td", {class: "msg", title: error}, error || "\\u2013"),
      td(readOnly || j.state !== "scheduled" ? "" : action("retry now", "POST",
        "jobs/" + j.id + "/retry", "job " + j.id + ": retrying now",
        "Retry job " + j.id + " (" + j.task + ") now?")));
  }), 8, "No job has an error.");
  fill("completed", done.jobs.map((j) => {
    const result = j.result === null || j.result === undefined
      ? "\\u2013" : JSON.stringify(j.result);
    return el("tr", {"data-job": j.id}, jobLink(j.id), td(j.task), td(j.queue),
      td(since(j.finished_at, ov.now) + " ago", "num"),
      el("td", {class: "msg", title: result}, result));
  }), 5, "No completed job is kept.");
  fill("workers", wk.workers.map((w) => el("tr", {},
    td(el("code", {}, w.id)), td(w.hostname), td(w.pid, "num"),
    td(Object.entries(w.queues || {}).map(([k, v]) => k + "=" + v).join(", ")),
    td(num(w.running), "num"), td(since(w.started_at, ov.now), "num"),
    td(ago(w.seconds_since_heartbeat) + " ago", "num"),
    td(w.alive ? badge("alive", "ok") : badge("silent", "bad")))), 8, "No workers registered.");
  $("dlq-stats").textContent = st.total ? num(st.total) + " in all; by reason: " +
    st.by_reason.map((r) => r.key + " " + num(r.count)).join(", ") : "";
  $("dlq-count").textContent = dl.total > dl.entries.length
    ? "showing " + dl.entries.length + " of " + num(dl.total) + " matching"
    : num(dl.total) + " matching";
  for (const id of ["bulk-requeue", "bulk-delete", "sel-requeue", "sel-delete"]) {
    $(id).hidden = readOnly;
  }
  const picked = new Set(selectedIds());
  fill("dlq", dl.entries.map((e) => {
    const error = [e.error_type, e.error_message].filter(Boolean).join(": ");
    const buttons = el("td");
    if (!readOnly) buttons.append(
      action("requeue", "POST", "dlq/" + e.id + "/requeue", "entry " + e.id + " requeued",
        "Requeue dead-letter entry " + e.id + " (" + e.task + ")?"),
      action("delete", "DELETE", "dlq/" + e.id, "entry " + e.id + " deleted",
        "Delete dead-letter entry " + e.id + " for good?"));
    const box = el("input", {type: "checkbox", class: "pick", value: e.id,
      "aria-label": "select entry " + e.id});
    box.checked = picked.has(e.id);
    return el("tr", {"data-entry": e.id}, el("td", {}, box), td(e.id, "num"), td(e.task),
      td(e.queue), td(e.failure_reason), td(e.failure_count, "num"),
      td(since(e.failed_at, ov.now) + " ago", "num"),
      el("td", {class: "msg", title: error}, error || "\\u2013"), buttons);
  }), 9, "No dead-letter entries match.");
}

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const query = new URLSearchParams({limit: "50", ...dlqFilter()}).toString();
    // Throughput reads the retained completed rows: every 15th refresh (30 s) is enough.
    const rate = rounds++ % 15 === 0 ? api("GET", "queues/throughput?minutes=30") : null;
    const [ov, wk, run, bad, done, dl, st, tp] = await Promise.all([
      api("GET", "overview"), api("GET", "workers"),
      api("GET", "jobs?state=running&limit=20"),
      api("GET", "jobs?errored=true&order=recent&limit=20"),
      api("GET", "jobs?state=completed&order=recent&limit=10"),
      api("GET", "dlq?" + query), api("GET", "dlq/stats"), rate]);
    if (tp) for (const q of tp.queues) rates.set(q.name, q.completed_per_minute);
    render(ov, wk, run, bad, done, dl, st);
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
$("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
$("filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
$("bulk-requeue").addEventListener("click", () => {
  const f = dlqFilter();
  if (!Object.keys(f).length) { flash("Set a filter first.", true); return; }
  bulk("requeue", f, new URLSearchParams(f).toString().replaceAll("&", ", "));
});
$("bulk-delete").addEventListener("click", () => {
  const f = dlqFilter();
  if (!Object.keys(f).length) { flash("Set a filter first.", true); return; }
  bulk("delete", f, new URLSearchParams(f).toString().replaceAll("&", ", "));
});
$("sel-requeue").addEventListener("click", () => {
  const ids = selectedIds();
  if (!ids.length) { flash("Select entries first.", true); return; }
  bulk("requeue", {ids}, "selected");
});
$("sel-delete").addEventListener("click", () => {
  const ids = selectedIds();
  if (!ids.length) { flash("Select entries first.", true); return; }
  bulk("delete", {ids}, "selected");
});
setInterval(() => { if (!frozen && !document.hidden) refresh(); }, 2000);
refresh();
"""

_BODY = """
<header>
  <h1>backfill_sa</h1><span class="muted">schema <code id="schema">…</code></span>
  <span id="ro" class="badge warn" hidden>read-only</span>
  <span class="grow"></span><span id="status"></span>
  <span class="muted" id="user"></span>
  <button id="freeze" type="button">pause refresh</button>
  <span id="insecure" class="badge bad" hidden>no authentication</span>
  <form method="post" action="logout" id="logout-form">
    <button type="submit" id="logout">sign out</button></form>
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
  <div id="flash" role="status"></div>
  <section id="detail" hidden>
    <h2><span id="detail-title"></span> <button type="button" id="detail-close">close</button></h2>
    <div class="muted" id="detail-attempts"></div>
    <div class="grid">
      <div><h3>Timeline</h3><ol id="detail-timeline"></ol></div>
      <div><h3>Result</h3><pre id="detail-result"></pre></div>
      <div><h3>Last error</h3><pre id="detail-error"></pre></div>
      <div><h3>Payload</h3><pre id="detail-payload"></pre></div>
    </div>
  </section>
  <h2>Queues</h2>
  <div class="scroll"><table><thead><tr><th>Queue</th><th class="num">Depth</th>
    <th class="num">Scheduled</th><th class="num">Running</th><th class="num">Oldest wait</th>
    <th>Completed/min (30 min)</th><th class="num">Dead</th><th class="num">Concurrency</th>
    <th>Status</th><th></th></tr></thead><tbody id="queues"></tbody></table></div>
  <h2>Running jobs <span class="muted" id="running-count"></span></h2>
  <div class="scroll"><table><thead><tr><th class="num">ID</th><th>Task</th><th>Queue</th>
    <th>Worker</th><th class="num">Running for</th><th class="num">Attempt</th><th></th>
    </tr></thead><tbody id="running-jobs"></tbody></table></div>
  <h2>Recent errors</h2>
  <div class="scroll"><table><thead><tr><th class="num">ID</th><th>Task</th><th>Queue</th>
    <th>State</th><th class="num">Attempts</th><th>Failed</th><th>Error</th><th></th></tr>
    </thead><tbody id="failing"></tbody></table></div>
  <h2>Recent completions</h2>
  <div class="scroll"><table><thead><tr><th class="num">ID</th><th>Task</th><th>Queue</th>
    <th class="num">Finished</th><th>Result</th></tr></thead>
    <tbody id="completed"></tbody></table></div>
  <h2>Workers</h2>
  <div class="scroll"><table><thead><tr><th>Worker</th><th>Host</th><th class="num">PID</th>
    <th>Queues</th><th class="num">Running</th><th class="num">Up</th>
    <th class="num">Heartbeat</th><th>Status</th></tr></thead>
    <tbody id="workers"></tbody></table></div>
  <h2>Dead letters <span class="muted" id="dlq-stats"></span></h2>
  <form class="filters" id="filters">
    <input id="f-task" placeholder="task" aria-label="task filter">
    <input id="f-queue" placeholder="queue" aria-label="queue filter">
    <select id="f-reason" aria-label="reason filter"><option value="">any reason</option>
      REASONS</select>
    <button type="submit" id="apply">filter</button>
    <span class="muted" id="dlq-count"></span>
  </form>
  <div class="filters">
    <button type="button" id="sel-requeue">requeue selected</button>
    <button type="button" id="sel-delete" class="danger">delete selected</button>
    <button type="button" id="bulk-requeue">requeue all matching</button>
    <button type="button" id="bulk-delete" class="danger">delete all matching</button>
  </div>
  <div class="scroll"><table><thead><tr><th></th><th class="num">ID</th><th>Task</th>
    <th>Queue</th><th>Reason</th><th class="num">Failures</th><th class="num">Failed</th>
    <th>Error</th><th></th></tr></thead><tbody id="dlq"></tbody></table></div>
</main>
"""

_REASON_OPTIONS = "".join(f"<option>{reason.value}</option>" for reason in FailureReason)

_PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '<link rel="icon" href="data:,"><title>backfill_sa admin</title>'
    f"<style>{_STYLE}</style></head><body>{_BODY.replace('REASONS', _REASON_OPTIONS)}"
    f"<script>{_SCRIPT}</script></body></html>\n"
).encode()

_HEADERS = page_headers(_SCRIPT, _STYLE)


def dashboard_response() -> HTMLResponse:
    """Return the dashboard page with its security headers."""
    return HTMLResponse(_PAGE, headers=_HEADERS)
