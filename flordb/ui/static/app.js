// FlorDB UI: each page fetches its JSON twin (/runs -> /runs.json, same query string) and draws it.
"use strict";

const TOKEN = document.querySelector('meta[name="flordb-token"]').content;
const PAGE = document.body.dataset.page;
const main = document.getElementById("main");
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function params() { return new URLSearchParams(location.search); }

function setParams(p) {
  const q = new URLSearchParams(p);
  for (const [k, v] of [...q]) if (v === "" || v === null) q.delete(k);
  history.replaceState(null, "", location.pathname + (q.toString() ? "?" + q : ""));
}

async function getJSON(path, p) {
  const q = new URLSearchParams(p || {});
  const r = await fetch(path + (q.toString() ? "?" + q : ""), { credentials: "same-origin" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function postJSON(path, body) {
  const r = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Flordb-Token": TOKEN }, body: JSON.stringify(body),
  });
  const out = await r.json();
  if (!r.ok) throw new Error(out.error || r.statusText);
  return out;
}

function errorBox(msg) { return el("div", { class: "error", role: "alert" }, "Error: " + msg); }
function add(parent, ...children) { parent.append(...children.filter(c => c !== null && c !== undefined)); }
function status(text) { document.getElementById("status").textContent = text; }
function painted() { document.body.dataset.painted = "1"; }
function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(4) : v.toPrecision(6).replace(/\.?0+$/, ""));
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

let plotlyReady = null;
function loadPlotly() {
  if (!plotlyReady) plotlyReady = new Promise((ok, fail) => {
    const s = el("script", { src: "/-/static/plotly.min.js" });
    s.onload = ok; s.onerror = () => fail(new Error("could not load plotly.min.js"));
    document.head.append(s);
  });
  return plotlyReady;
}

function colorMap(keys) {
  const m = new Map();
  for (const k of keys) if (!m.has(k)) m.set(k, PALETTE[m.size % PALETTE.length]);
  return m;
}

function smooth(ys, alpha) {
  if (!alpha) return ys;
  const out = []; let s = null;
  for (const y of ys) { s = s === null ? y : alpha * s + (1 - alpha) * y; out.push(s); }
  return out;
}

// ---------------------------------------------------------------- Runs

async function runsPage() {
  const p = params();
  const selected = new Set((p.get("runs") || "").split(",").filter(Boolean));
  let sortKey = p.get("sort") || "started", sortDir = p.get("dir") === "asc" ? 1 : -1;
  const where = el("input", { type: "text", id: "where", placeholder: "SQL predicate, e.g. lr > 0.01 AND epoch = 2", value: p.get("where") || "" });
  const metric = el("select", { id: "metric" }, el("option", { value: "" }, "last value of…"));
  const quick = ["all", "running", "finished", "failed"].map(s => el("button", { "data-status": s, class: (p.get("status") || "all") === s ? "on" : "" }, s));
  const curvesBtn = el("button", { class: "primary", id: "to-curves" }, "Curves of selected");
  const compareBtn = el("button", { id: "to-compare" }, "Compare selected");
  const info = el("span", { class: "muted", id: "count" });
  const wrap = el("div", { class: "tablewrap" });
  const err = el("div");
  main.append(el("div", { class: "controls" }, where, el("button", { id: "filter", onclick: () => { offset = 0; load(); } }, "Filter"), ...quick, metric, curvesBtn, compareBtn, info), err, wrap);
  let data = null, status_ = p.get("status") || "", offset = Number(p.get("offset")) || 0;
  const prev = el("button", { id: "prev-page" }, "‹ previous"), next = el("button", { id: "next-page" }, "next ›");
  const pager = el("div", { class: "controls pager", hidden: true }, prev, next);
  prev.addEventListener("click", () => { offset = Math.max(0, offset - data.limit); load(); });
  next.addEventListener("click", () => { offset += data.limit; load(); });
  main.append(pager);

  where.addEventListener("keydown", e => { if (e.key === "Enter") { offset = 0; load(); } });
  metric.addEventListener("change", () => load());
  quick.forEach(b => b.addEventListener("click", () => {
    status_ = b.dataset.status === "all" ? "" : b.dataset.status;
    quick.forEach(q => q.classList.toggle("on", q === b)); offset = 0; load();
  }));
  curvesBtn.addEventListener("click", () => { location.href = "/curves?runs=" + [...selected].join(","); });
  compareBtn.addEventListener("click", () => { location.href = "/compare?runs=" + [...selected].join(","); });

  function value(r, key) {
    if (key.startsWith("arg:")) return r.args[key.slice(4)];
    return r[key];
  }
  function draw() {
    const labels = data.runs.some(r => r.name) ? [["name", "name"], ["tags", "tags"]] : [["tags", "tags"]];
    const cols = [["run_id", "run"], ...labels, ["status", "status"], ["version", "version"], ["script", "script"], ["started", "start"], ["seconds", "duration (s)"],
      ...data.args.map(a => ["arg:" + a, a]), ...(data.metric ? [["metric", data.metric + " (last)"]] : [])];
    const rows = data.runs;  // sorted, filtered and paged by the server
    const all = el("input", { type: "checkbox", title: "select the runs on this page", onclick: e => { rows.forEach(r => e.target.checked ? selected.add(r.run_id) : selected.delete(r.run_id)); draw(); } });
    const head = el("tr", {}, el("th", {}, all), cols.map(([k, label]) => el("th", { "data-key": k, onclick: () => { sortDir = sortKey === k ? -sortDir : 1; sortKey = k; offset = 0; load(); } }, label + (sortKey === k ? (sortDir > 0 ? " ▲" : " ▼") : ""))));
    const body = el("tbody");
    const frag = document.createDocumentFragment();
    for (const r of rows) {
      const box = el("input", { type: "checkbox", class: "pick", "data-run": r.run_id });
      box.checked = selected.has(r.run_id);
      box.addEventListener("change", () => { box.checked ? selected.add(r.run_id) : selected.delete(r.run_id); tr.classList.toggle("selected", box.checked); sync(); });
      const tr = el("tr", { class: selected.has(r.run_id) ? "selected" : "", "data-run": r.run_id }, el("td", {}, box),
        cols.map(([k]) => {
          const v = value(r, k);
          if (k === "status") return el("td", { title: r.error || "" }, el("span", { class: "dot " + v }), v);
          if (k === "version") return el("td", { title: v }, (v || "").slice(0, 7));
          if (k === "tags") return tagCell(r);
          return el("td", { class: typeof v === "number" ? "num" : "" }, fmt(v));
        }));
      frag.append(tr);
    }
    body.append(frag);
    wrap.replaceChildren(el("table", { id: "runs" }, el("thead", {}, head), body));
    sync();
  }
  function tagCell(r) {  // each tag with a button that removes it, and one that adds a tag (POST, as `flordb tag`)
    const td = el("td", { class: "tags" });
    const edit = async (tag, remove) => {
      try {
        const out = await postJSON("/-/tag", { run: r.run_id, tag, remove });
        r.tags = out.tags; r.name = out.name;
        td.replaceWith(tagCell(r));
      } catch (e) { err.replaceChildren(errorBox(e.message)); }
    };
    for (const t of (r.tags || "").split(",").filter(Boolean))
      td.append(el("span", { class: "tag", "data-tag": t }, t, el("button", { class: "untag", title: `remove tag ${t}`, onclick: () => edit(t, true) }, "×")));
    const plus = el("button", { class: "add-tag", title: "add a tag" }, "+");
    plus.addEventListener("click", () => {
      const input = el("input", { type: "text", class: "new-tag", placeholder: "tag, Enter", size: 10 });
      input.addEventListener("keydown", e => { if (e.key === "Enter" && input.value.trim()) edit(input.value.trim(), false); if (e.key === "Escape") input.replaceWith(plus); });
      plus.replaceWith(input); input.focus();
    });
    td.append(plus);
    return td;
  }
  function sync() {
    const last = data.offset + data.runs.length;
    info.textContent = `${data.count} of ${data.total} runs` + (data.count > data.runs.length ? ` (${data.offset + 1}–${last} shown)` : "") + `, ${selected.size} selected`;
    prev.disabled = data.offset === 0; next.disabled = last >= data.count;
    pager.hidden = data.count <= data.limit;
    setParams({ where: where.value, status: status_, metric: metric.value, runs: [...selected].join(","), sort: sortKey === "started" ? "" : sortKey,
      dir: sortDir > 0 ? "asc" : "", offset: offset || "", limit: p.get("limit") || "" });
  }
  async function load() {
    err.replaceChildren();
    try {
      data = await getJSON("/runs.json", { where: where.value, status: status_, metric: metric.value, sort: sortKey, dir: sortDir > 0 ? "asc" : "desc", offset, limit: p.get("limit") || "" });
      if (data.runs.length === 0 && data.count > 0 && offset > 0) { offset = Math.max(0, data.count - data.limit); return load(); }
      if (metric.options.length === 1) for (const c of data.columns.log) metric.append(el("option", { value: c.name }, c.name));
      metric.value = data.metric || "";
      draw(); painted();
      status("updated " + new Date().toLocaleTimeString());
    } catch (e) { err.replaceChildren(errorBox(e.message)); painted(); }
  }
  if (p.get("metric")) metric.append(el("option", { value: p.get("metric") }, p.get("metric")));
  metric.value = p.get("metric") || "";
  await load();
  onChanges(() => data && data.generation, () => document.activeElement && document.activeElement.classList.contains("new-tag") ? null : load());
}

// ---------------------------------------------------------------- Curves

function f64(b64) {  // base64 of little-endian float64s -> Float64Array
  const s = atob(b64), bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return new Float64Array(bytes.buffer);
}

async function getCurves(p) {  // the curves as typed arrays: no number parsing on either side
  const d = await getJSON("/curves.json", { ...p, encoding: "f64" });
  for (const panel of d.panels) for (const l of panel.lines) { l.x = f64(l.x); l.y = f64(l.y); }
  return d;
}

function drawLines(div, panel, opts, runsMeta, onZoom) {
  const key = r => opts.color === "run" ? r : opts.color === "version" ? (runsMeta[r] || {}).version : fmt(((runsMeta[r] || {}).args || {})[opts.color.slice(4)]);
  const colors = colorMap(panel.lines.map(l => key(l.run_id)));
  const lines = panel.lines.map(l => {
    const k = key(l.run_id);
    return { name: l.run_id, label: l.run_id + (opts.color !== "run" ? ` (${String(k).slice(0, 12)})` : ""), color: colors.get(k),
      x: l.x, y: smooth(l.y, opts.smooth), replayed: l.replayed };
  });
  const chart = div.chart || new LineChart(div, onZoom);
  chart.draw({ title: panel.y, xTitle: panel.x, yTitle: panel.y, logY: opts.log, range: opts.range || null, height: 320,
    legend: panel.lines.length <= 12, lines });
  return chart;
}

async function curvesPage() {
  const p = params();
  let runs = (p.get("runs") || "").split(",").filter(Boolean);
  const ysel = el("select", { id: "add-y" }, el("option", { value: "" }, "add a panel…"));
  const xsel = el("select", { id: "x" }, el("option", { value: "" }, "x: default"));
  const color = el("select", { id: "color" }, el("option", { value: "run" }, "colour by run"), el("option", { value: "version" }, "colour by version"));
  const log = el("input", { type: "checkbox", id: "log" });
  const sm = el("input", { type: "range", id: "smooth", min: 0, max: 0.99, step: 0.01, value: p.get("smooth") || 0 });
  const err = el("div"), panelsDiv = el("div", { class: "panels", id: "panels" });
  const hs = el("div");
  main.append(el("div", { class: "controls" }, ysel, xsel, color, el("label", {}, log, " log scale"), el("label", {}, "smoothing ", sm),
    el("span", { class: "muted", id: "runs-note" })), err, hs, panelsDiv);
  let ys = (p.get("y") || "").split(",").filter(Boolean);
  log.checked = p.get("log") === "1";
  color.value = p.get("color") || "run";
  let filled = false;
  function fillControls(d) {  // the pickers, from the first answer (one request, not three)
    if (filled) return;
    filled = true;
    for (const c of d.columns.log) ysel.append(el("option", { value: c.name }, c.name));
    for (const a of d.columns.arg) color.append(el("option", { value: "arg:" + a.name }, "colour by " + a.name));
    if (d.panels.length) for (const x of d.panels[0].x_choices) xsel.append(el("option", { value: x }, "x: " + x));
    color.value = p.get("color") || "run"; xsel.value = p.get("x") || "";
    runs = d.run_ids;
    if (!ys.length) ys = d.panels.map(pp => pp.y);
    document.getElementById("runs-note").textContent = `${runs.length} run(s): ${runs.slice(0, 6).join(", ")}${runs.length > 6 ? "…" : ""}`;
  }
  let data = null;
  const opts = () => ({ color: color.value, log: log.checked, smooth: Number(sm.value) });
  function render() {
    const old = new Map([...panelsDiv.children].map(d => [d.dataset.y, d]));  // kept: zoom, hidden lines
    const divs = data.panels.map(panel => old.get(panel.y) || el("div", { class: "panel", "data-y": panel.y }));
    panelsDiv.replaceChildren(...divs);  // all in place first, so each plot takes its final width
    data.panels.forEach((panel, i) => drawLines(divs[i], panel, { ...opts(), range: ranges[panel.y] }, data.runs, (x0, x1) => zoom(divs[i], panel.y, x0, x1)));
  }
  const ranges = {};
  async function zoom(div, y, x0, x1) {  // fetch more detail for the zoomed range, downsampled again
    const q = { runs: runs.join(","), y, x: xsel.value, width: Math.round(div.clientWidth) - 74 };
    if (x0 !== null) Object.assign(q, { x0, x1 });
    const more = await getCurves(q);
    const i = data.panels.findIndex(pp => pp.y === y);
    data.panels[i] = more.panels[0];
    ranges[y] = x0 !== null ? [x0, x1] : null;
    drawLines(div, more.panels[0], { ...opts(), range: ranges[y] }, data.runs);
  }
  function plotWidth() {  // pixels of one panel's plot area: one bucket per pixel
    const w = panelsDiv.clientWidth || 1000, perRow = Math.max(1, Math.min(ys.length || 1, Math.floor(w / 480)));
    return Math.max(50, Math.min(1000, Math.round(w / perRow) - 80));
  }
  async function load(refresh) {  // refresh: news from the store; the hindsight box (maybe replaying) stays
    if (!refresh) { err.replaceChildren(); hs.replaceChildren(); }
    try {
      const d = await getCurves({ runs: runs.join(","), y: ys.join(","), x: xsel.value, width: plotWidth() });
      fillControls(d);
      data = d;
      setParams({ runs: runs.join(","), y: ys.join(","), x: xsel.value, color: color.value, log: log.checked ? "1" : "", smooth: sm.value === "0" ? "" : sm.value });
      render(); painted();
      status("updated " + new Date().toLocaleTimeString());
      if (d.missing.length && !refresh) {  // a chart naming a column no run recorded: offer hindsight
        const q = `SELECT run_id, ${d.missing.map(quoteIdent).join(", ")} FROM logs WHERE run_id IN (${runs.map(r => `'${r.replace(/'/g, "''")}'`).join(", ")})`;
        const res = await getJSON("/sql.json", { q });
        if (res.plan) hs.append(hindsightBox(res, () => location.reload()));
        else if (res.error) err.append(errorBox(res.error));
      }
    } catch (e) { err.append(errorBox(e.message)); painted(); }
  }
  ysel.addEventListener("change", () => { if (ysel.value && !ys.includes(ysel.value)) ys.push(ysel.value); ysel.value = ""; load(); });
  xsel.addEventListener("change", () => { for (const k of Object.keys(ranges)) delete ranges[k]; load(); });  // another axis
  for (const c of [color, log, sm]) c.addEventListener(c === sm ? "input" : "change", () => { if (data) render(); setParams({ runs: runs.join(","), y: ys.join(","), x: xsel.value, color: color.value, log: log.checked ? "1" : "", smooth: sm.value === "0" ? "" : sm.value }); });
  await load();
  onChanges(() => data && data.generation, () => load(true));  // a running run's curves grow while the page is open
}

// Pages redraw when the store changes (new records of a running run, new runs, tags, replays): the server
// streams a summary of the store (records, runs, statuses, labels, replays); a page reloads its data when it
// differs from the one its data came with.
function onChanges(shownGeneration, reload) {
  let busy = false, again = false;
  const run = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try { await reload(); } finally { busy = false; if (again) { again = false; run(); } }
  };
  let events = null;
  const listen = () => {
    events = new EventSource("/-/changes");
    events.onmessage = m => {
      const gen = JSON.parse(m.data).generation, shown = shownGeneration();
      if (gen !== null && shown && JSON.stringify(gen) !== JSON.stringify(shown)) run();
    };
  };
  // A browser keeps few connections per server: a tab in the background lets go of its stream
  // (its first message on return says whether there was news meanwhile).
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && events) { events.close(); events = null; } else if (!document.hidden && !events) listen();
  });
  if (!document.hidden) listen();
}

function quoteIdent(name) { return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? name : '"' + name.replace(/"/g, '""') + '"'; }

// ---------------------------------------------------------------- Hindsight

function hindsightBox(res, onDone) {
  const plan = res.plan;
  const box = el("div", { class: "hindsight", id: "hindsight" });
  const table = el("table", { id: "plan" }, el("tr", {}, ["run", "version", "strategy", "iterations", "tasks", "est. (s)"].map(h => el("th", {}, h))),
    plan.runs.map(r => el("tr", {}, el("td", {}, r.run_id), el("td", {}, r.version.slice(0, 7)), el("td", {}, r.strategy), el("td", { class: "num" }, r.iterations), el("td", { class: "num" }, r.tasks), el("td", { class: "num" }, r.estimate))));
  const bar = el("progress", { id: "replay-progress", max: 1, value: 0 });
  const note = el("span", { class: "muted", id: "replay-note" });
  const sources = el("div", { id: "sources" });
  const button = el("button", { class: "primary", id: "replay" }, `Replay ${plan.runs.length} run(s)`);
  button.disabled = !plan.runs.length;
  button.addEventListener("click", async () => {
    button.disabled = true; note.textContent = "starting…";
    try {
      const job = await postJSON("/-/replay", { names: res.missing, where: res.where });
      const events = new EventSource(`/-/jobs/${job.job}/events`);
      events.onmessage = m => {
        const j = JSON.parse(m.data);
        bar.max = Math.max(1, j.total); bar.value = j.done;
        note.textContent = j.state === "running" ? `${j.done}/${j.total} task(s)` : j.message;
        if (j.state !== "running") {
          events.close();
          box.dataset.state = j.state;
          sources.replaceChildren(...patchedSources(j).childNodes);
          if (j.state === "done") onDone(j);
        }
      };
    } catch (e) { note.textContent = "Error: " + e.message; button.disabled = false; }
  });
  add(box,
    el("div", {}, el("b", {}, res.missing.join(", ")), " was never recorded by these runs; the current code logs it:"),
    ...plan.statements.map(s => el("pre", {}, `${s.script}:${s.lineno}  ${s.text}   (${s.position})`)),
    table,
    plan.refused.length ? el("div", { class: "muted" }, plan.refused.map(r => `left out: ${r.run_id}: ${r.reason}`).join("; ")) : null,
    el("div", { class: "controls" }, button, bar, note, el("span", { class: "muted" }, `about ${plan.estimate} s on ${plan.workers} worker(s)`)),
    sources,
  );
  return box;
}

function patchedSources(job) {  // links to the patched old source of each replayed version
  const box = el("div", { id: "sources" }, el("h2", {}, "Patched source"));
  const seen = new Set();
  for (const p of job.patched) {
    if (seen.has(p.version)) continue;
    seen.add(p.version);
    box.append(el("div", {}, el("a", { href: "#", "data-version": p.version, onclick: e => { e.preventDefault(); showSource(box, p.version, p.script); } },
      `${p.script} @ ${String(p.version).slice(0, 7)} (replayed into ${job.patched.filter(q => q.version === p.version).map(q => q.run_id).join(", ")})`)));
  }
  return box;
}

async function showSource(where, version, path) {
  const s = await getJSON("/-/source.json", { version, path });
  where.append(el("pre", { class: "code", "data-source": version }, s.text));
}

// ---------------------------------------------------------------- SQL

async function sqlPage() {
  const p = params();
  const ta = el("textarea", { id: "sql", spellcheck: "false", placeholder: "SELECT epoch, avg(loss) FROM logs GROUP BY ALL ORDER BY ALL" });
  ta.value = p.get("q") || "";
  const run = el("button", { class: "primary", id: "run" }, "Run (Ctrl-Enter)");
  const out = el("div", { id: "result" }), chartCtl = el("div", { class: "controls" }), chart = el("div", { id: "chart" });
  const sug = el("div", { class: "suggest", hidden: true });
  main.append(el("div", { style: "position:relative" }, ta, sug), el("div", { class: "controls" }, run, el("span", { class: "muted" }, "Tab: complete · read-only")), out, chartCtl, chart);
  let items = [], cur = 0, word = "";

  async function complete() {
    const r = await getJSON("/-/complete.json", { text: ta.value, cursor: ta.selectionStart });
    items = r.suggestions; word = r.word; cur = 0;
    if (items.length === 1) return pick(items[0]);
    sug.replaceChildren(...items.map((s, i) => el("div", { class: i === cur ? "cur" : "", onmousedown: e => { e.preventDefault(); pick(s); } }, s)));
    sug.hidden = !items.length;
  }
  function pick(s) {
    const pos = ta.selectionStart;
    ta.value = ta.value.slice(0, pos - word.length) + s + ta.value.slice(pos);
    ta.selectionStart = ta.selectionEnd = pos - word.length + s.length;
    sug.hidden = true;
  }
  ta.addEventListener("keydown", e => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); go(); return; }
    if (!sug.hidden) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") { e.preventDefault(); cur = (cur + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length; [...sug.children].forEach((c, i) => c.className = i === cur ? "cur" : ""); return; }
      if (e.key === "Enter" || e.key === "Tab") { e.preventDefault(); pick(items[cur]); return; }
      if (e.key === "Escape") { sug.hidden = true; return; }
    }
    if (e.key === "Tab" || (e.key === " " && e.ctrlKey)) { e.preventDefault(); complete(); }
  });
  ta.addEventListener("blur", () => { sug.hidden = true; });
  run.addEventListener("click", () => go());

  async function go(job) {
    setParams({ q: ta.value });
    out.replaceChildren(el("span", { class: "muted" }, "running…")); chartCtl.replaceChildren(); chart.replaceChildren();
    let res;
    try { res = await getJSON("/sql.json", { q: ta.value }); } catch (e) { out.replaceChildren(errorBox(e.message)); painted(); return; }
    if (res.plan) { out.replaceChildren(hindsightBox(res, j => go(j))); painted(); return; }
    if (res.error) { out.replaceChildren(errorBox(res.error)); painted(); return; }
    const replayed = new Set(res.replayed || []);
    const head = el("tr", {}, res.columns.map(c => el("th", { class: replayed.has(c) ? "replayed" : "" }, c)));
    const body = el("tbody");
    for (const row of res.rows) body.append(el("tr", {}, row.map((v, i) => el("td", { class: (typeof v === "number" ? "num " : "") + (replayed.has(res.columns[i]) ? "replayed" : "") }, fmt(v)))));
    out.replaceChildren(el("div", { class: "muted", id: "rowcount" }, `${res.count} row(s)` + (res.truncated ? ` (first ${res.rows.length} shown)` : "")),
      el("div", { class: "tablewrap" }, el("table", { id: "results" }, el("thead", {}, head), body)));
    if (job && job.patched && job.patched.length) out.append(patchedSources(job));
    chartControls(res);
    painted();
  }
  function chartControls(res) {
    if (!res.rows.length || res.columns.length < 2) return;
    const pickCol = (id, label, none) => el("select", { id }, none ? el("option", { value: "" }, none) : null, res.columns.map((c, i) => el("option", { value: i }, `${label}: ${c}`)));
    const x = pickCol("chart-x", "x"), y = pickCol("chart-y", "y"), c = pickCol("chart-color", "colour", "no colour");
    const kind = el("select", { id: "chart-kind" }, el("option", { value: "lines" }, "lines"), el("option", { value: "markers" }, "points"), el("option", { value: "bar" }, "bars"));
    y.value = String(Math.min(1, res.columns.length - 1)); x.value = "0";
    const drawBtn = el("button", { id: "draw" }, "Chart");
    chartCtl.replaceChildren(x, y, c, kind, drawBtn);
    drawBtn.addEventListener("click", async () => {
      await loadPlotly();
      const xi = Number(x.value), yi = Number(y.value), ci = c.value === "" ? null : Number(c.value);
      const groups = new Map();
      for (const row of res.rows) {
        const k = ci === null ? res.columns[yi] : fmt(row[ci]);
        if (!groups.has(k)) groups.set(k, { x: [], y: [] });
        groups.get(k).x.push(row[xi]); groups.get(k).y.push(row[yi]);
      }
      const traces = [...groups].map(([k, g]) => kind.value === "bar" ? { type: "bar", name: k, x: g.x, y: g.y } : { type: "scatter", mode: kind.value, name: k, x: g.x, y: g.y });
      Plotly.react(chart, traces, { height: 380, margin: { l: 55, r: 10, t: 20, b: 40 }, xaxis: { title: { text: res.columns[xi] } }, yaxis: { title: { text: res.columns[yi] } } }, { displaylogo: false, responsive: true });
    });
  }
  if (ta.value.trim()) await go(); else painted();
}

// ---------------------------------------------------------------- Compare

async function comparePage() {
  const p = params();
  const runs = (p.get("runs") || "").split(",").filter(Boolean);
  if (runs.length < 2) { main.append(el("p", {}, "Select two or more runs on the ", el("a", { href: "/runs" }, "Runs"), " page, then Compare selected.")); painted(); return; }
  let d;
  try { d = await getJSON("/compare.json", { runs: runs.join(",") }); } catch (e) { main.append(errorBox(e.message)); painted(); return; }
  const argTable = el("table", { id: "args-differ" }, el("tr", {}, el("th", {}, "run"), el("th", {}, "version"), d.args_differ.map(a => el("th", {}, a))),
    d.runs.map(r => el("tr", {}, el("td", {}, r.run_id), el("td", {}, r.version.slice(0, 7)), d.args_differ.map(a => el("td", {}, fmt(r.args[a]))))));
  add(main, el("h2", {}, "Args that differ"), d.args_differ.length ? argTable : el("p", { class: "muted" }, "none"),
    d.args_same.length ? el("p", { class: "muted" }, "same in all: " + d.args_same.map(a => `${a}=${fmt(d.runs[0].args[a])}`).join(", ")) : null);
  if (d.divergence) {
    const v = d.divergence;
    main.append(el("h2", {}, "First divergence"), el("p", { id: "divergence" },
      v.error ? "Error: " + v.error : v.agree ? `agree on ${v.compared_rows} aligned values` : v.text || "no aligned values"));
  }
  main.append(el("h2", {}, "Code"));
  for (const c of d.diffs) {
    main.append(el("p", { class: "muted" }, `${c.a.slice(0, 7)} → ${c.b.slice(0, 7)}: ` + (c.error ? c.error : c.same ? "same code" : `${c.files.length} file(s) differ`)));
    for (const f of c.files || []) {
      const pre = el("pre", { class: "code diff" });
      for (const line of f.diff.split("\n")) pre.append(el("div", { class: line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "" }, line || " "));
      main.append(pre);
    }
  }
  main.append(el("h2", {}, "Curves"));
  const cols = await getJSON("/-/columns.json");
  const ysel = el("select", { id: "compare-y" }, cols.log.map(c => el("option", { value: c.name }, c.name)));
  const plot = el("div", { class: "panel", id: "compare-plot" });
  main.append(el("div", { class: "controls" }, ysel), plot);
  async function draw() {
    if (!ysel.value) return;
    const c = await getCurves({ runs: runs.join(","), y: ysel.value, width: Math.max(50, plot.clientWidth - 74) });
    drawLines(plot, c.panels[0], { color: "run", log: false, smooth: 0 }, c.runs, async (x0, x1) => {
      const z = await getCurves({ runs: runs.join(","), y: ysel.value, width: Math.max(50, plot.clientWidth - 74), ...(x0 === null ? {} : { x0, x1 }) });
      drawLines(plot, z.panels[0], { color: "run", log: false, smooth: 0, range: x0 === null ? null : [x0, x1] }, c.runs);
    });
  }
  ysel.addEventListener("change", draw);
  await draw();
  painted();
}

// ---------------------------------------------------------------- start

for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === PAGE);
({ runs: runsPage, curves: curvesPage, sql: sqlPage, compare: comparePage }[PAGE])().catch(e => { main.append(errorBox(e.message)); painted(); });
