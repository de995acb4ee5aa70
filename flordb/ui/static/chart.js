// FlorDB's own line chart on a <canvas>: the Curves and Compare pages draw with it.
// Why not the plotting library: 100 lines x 2,000 points as SVG paths take several times longer to lay
// out in a browser without a GPU than one canvas path per line (benchmarks/bench_ui.py prints both). It keeps what
// a person uses on a curve: hover values, drag to zoom (double-click to reset), log scale, a legend
// that hides a line on click, and a mark on each replayed value.
"use strict";

const CHART_MARGIN = { l: 62, r: 12, t: 10, b: 42 };

function niceStep(span, count) {
  const raw = span / Math.max(1, count), mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

function linearTicks(lo, hi, count, integral) {
  if (!(hi > lo)) return [lo];
  const step = integral ? Math.max(1, niceStep(hi - lo, count)) : niceStep(hi - lo, count), out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

function logTicks(lo, hi) {  // lo, hi: log10 of the range
  const a = Math.ceil(lo - 1e-9), b = Math.floor(hi + 1e-9);
  if (b - a >= 1) {
    const every = Math.max(1, Math.ceil((b - a + 1) / 6)), out = [];
    for (let e = a; e <= b; e += every) out.push(Math.pow(10, e));
    return out;
  }
  return linearTicks(Math.pow(10, lo), Math.pow(10, hi), 4).filter(v => v > 0);
}

function tickLabel(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(0).replace("e+", "e");
  return String(Number(v.toPrecision(6)));
}

class LineChart {
  /** A chart inside ``div``; ``onZoom(x0, x1)`` after a drag (``onZoom(null)`` on double-click). */
  constructor(div, onZoom) {
    this.div = div;
    this.onZoom = onZoom || (() => {});
    this.hidden = new Set();
    div.classList.add("chart");
    div.replaceChildren();
    this.titleEl = document.createElement("div");
    this.titleEl.className = "chart-title";
    this.box = document.createElement("div");
    this.box.className = "chart-box";
    this.canvas = document.createElement("canvas");
    this.tip = document.createElement("div");
    this.tip.className = "chart-tip";
    this.tip.hidden = true;
    this.sel = document.createElement("div");
    this.sel.className = "chart-sel";
    this.sel.hidden = true;
    this.legend = document.createElement("div");
    this.legend.className = "chart-legend";
    this.box.append(this.canvas, this.sel, this.tip);
    div.append(this.titleEl, this.box, this.legend);
    div.chart = this;
    this.listen();
    this.width = 0;
    new ResizeObserver(() => { if (this.spec && this.box.clientWidth !== this.width) this.draw(this.spec); }).observe(this.box);
  }

  /** spec: {title, xTitle, yTitle, logY, range: [x0, x1] | null, height, legend,
   *         lines: [{name, color, x, y, replayed: [indices]}]} */
  draw(spec) {
    this.spec = spec;
    this.lines = spec.lines;
    this.logY = !!spec.logY;
    this.titleEl.textContent = spec.title || "";
    const W = this.width = this.box.clientWidth || 600, H = spec.height || 320, dpr = window.devicePixelRatio || 1;
    const c = this.canvas;
    c.width = Math.round(W * dpr); c.height = Math.round(H * dpr);
    c.style.width = W + "px"; c.style.height = H + "px";
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    const m = CHART_MARGIN, pw = W - m.l - m.r, ph = H - m.t - m.b;
    const ty = v => this.logY ? (v > 0 ? Math.log10(v) : NaN) : v;
    const shown = spec.lines.filter(l => !this.hidden.has(l.name));
    // domains: x from the lines (or the zoomed range), y from the points inside the x domain
    let x0 = Infinity, x1 = -Infinity;
    if (spec.range) [x0, x1] = spec.range;
    else for (const l of shown) if (l.x.length) { x0 = Math.min(x0, l.x[0]); x1 = Math.max(x1, l.x[l.x.length - 1]); }
    let y0 = Infinity, y1 = -Infinity;
    for (const l of shown) {
      const xs = l.x, ys = l.y;
      for (let i = 0; i < xs.length; i++) {
        if (xs[i] < x0 || xs[i] > x1) continue;
        const v = ty(ys[i]);
        if (v < y0) y0 = v;
        if (v > y1) y1 = v;
      }
    }
    if (!isFinite(x0)) { x0 = 0; x1 = 1; }
    if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
    if (!isFinite(y0)) { y0 = 0; y1 = 1; }
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    const pad = (y1 - y0) * 0.04;
    y0 -= pad; y1 += pad;
    const sx = pw / (x1 - x0), sy = ph / (y1 - y0);
    this.frame = { x0, x1, y0, y1, sx, sy, m, pw, ph };
    // grid and axes
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#e6e6e6"; ctx.fillStyle = "#555"; ctx.lineWidth = 1;
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    const integral = shown.every(l => l.x.every(Number.isInteger));  // loop coordinates: no ticks between steps
    for (const t of linearTicks(x0, x1, Math.max(2, Math.floor(pw / 90)), integral)) {
      const px = Math.round(m.l + (t - x0) * sx) + 0.5;
      ctx.beginPath(); ctx.moveTo(px, m.t); ctx.lineTo(px, m.t + ph); ctx.stroke();
      ctx.fillText(tickLabel(t), px, m.t + ph + 4);
    }
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    const yt = this.logY ? logTicks(y0, y1) : linearTicks(y0, y1, Math.max(2, Math.floor(ph / 50)));
    for (const t of yt) {
      const py = Math.round(m.t + ph - (ty(t) - y0) * sy) + 0.5;
      if (py < m.t - 1 || py > m.t + ph + 1) continue;
      ctx.beginPath(); ctx.moveTo(m.l, py); ctx.lineTo(m.l + pw, py); ctx.stroke();
      ctx.fillText(tickLabel(t), m.l - 5, py);
    }
    ctx.strokeStyle = "#999";
    ctx.strokeRect(m.l + 0.5, m.t + 0.5, pw, ph);
    ctx.textAlign = "center"; ctx.textBaseline = "bottom"; ctx.fillStyle = "#333";
    ctx.fillText(spec.xTitle || "", m.l + pw / 2, H - 2);
    // lines, clipped to the plot area; pixel positions kept for hover
    ctx.save();
    ctx.beginPath(); ctx.rect(m.l, m.t, pw, ph); ctx.clip();
    ctx.lineWidth = 1.5; ctx.lineJoin = "round";
    for (const l of shown) {
      const xs = l.x, ys = l.y, n = xs.length, px = new Float32Array(n), py = new Float32Array(n);
      ctx.strokeStyle = l.color;
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < n; i++) {
        const v = ty(ys[i]);
        px[i] = m.l + (xs[i] - x0) * sx;
        py[i] = m.t + ph - (v - y0) * sy;
        if (!isFinite(py[i])) { pen = false; continue; }
        if (pen) ctx.lineTo(px[i], py[i]); else { ctx.moveTo(px[i], py[i]); pen = true; }
      }
      ctx.stroke();
      l.px = px; l.py = py;
      if (l.replayed && l.replayed.length) {  // replayed values: an open diamond each
        ctx.beginPath();
        for (const i of l.replayed) {
          if (!isFinite(py[i])) continue;
          ctx.moveTo(px[i], py[i] - 4); ctx.lineTo(px[i] + 4, py[i]); ctx.lineTo(px[i], py[i] + 4); ctx.lineTo(px[i] - 4, py[i]); ctx.closePath();
        }
        ctx.stroke();
      }
    }
    ctx.restore();
    this.drawLegend(spec);
    this.div.dataset.lines = String(shown.length);
  }

  drawLegend(spec) {
    if (!spec.legend) { this.legend.replaceChildren(); return; }
    this.legend.replaceChildren(...spec.lines.map(l => {
      const item = document.createElement("span");
      item.className = "trace" + (this.hidden.has(l.name) ? " off" : "");
      item.dataset.name = l.name;
      item.title = "click to hide or show";
      const sw = document.createElement("i");
      sw.style.background = l.color;
      item.append(sw, l.label || l.name);
      item.addEventListener("click", () => {
        this.hidden.has(l.name) ? this.hidden.delete(l.name) : this.hidden.add(l.name);
        this.draw(this.spec);
      });
      return item;
    }));
  }

  /** The point nearest to pixel (mx, my), within 30 pixels: {line, i} or null. */
  nearest(mx, my) {
    let best = null, bd = 900;
    for (const l of this.lines || []) {
      if (this.hidden.has(l.name) || !l.px) continue;
      const px = l.px, py = l.py;
      for (let i = 0; i < px.length; i++) {
        const dx = px[i] - mx;
        if (dx > 30 || dx < -30) continue;
        const d = dx * dx + (py[i] - my) * (py[i] - my);
        if (d < bd) { bd = d; best = { line: l, i }; }
      }
    }
    return best;
  }

  listen() {
    const c = this.canvas;
    const pos = e => { const r = c.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
    let drag = null;
    c.addEventListener("mousemove", e => {
      const [mx, my] = pos(e), f = this.frame;
      if (!f) return;
      if (drag !== null) {
        const a = Math.max(f.m.l, Math.min(drag, mx)), b = Math.min(f.m.l + f.pw, Math.max(drag, mx));
        Object.assign(this.sel.style, { left: a + "px", width: (b - a) + "px", top: f.m.t + "px", height: f.ph + "px" });
        this.sel.hidden = false;
        return;
      }
      const hit = this.nearest(mx, my);
      if (!hit) { this.tip.hidden = true; return; }
      const l = hit.line, s = this.spec, replayed = l.replayed && l.replayed.includes(hit.i);
      this.tip.replaceChildren(...[l.name, `${s.xTitle}=${fmtNum(l.x[hit.i])}`, `${s.yTitle}=${fmtNum(l.y[hit.i])}`,
        ...(l.replayed && l.replayed.length ? [replayed ? "replayed" : "recorded"] : [])].map(t => {
        const d = document.createElement("div"); d.textContent = t; return d;
      }));
      this.tip.style.borderColor = l.color;
      const left = l.px[hit.i] + 12 + 160 > this.width ? l.px[hit.i] - 170 : l.px[hit.i] + 12;
      Object.assign(this.tip.style, { left: left + "px", top: Math.max(0, l.py[hit.i] - 20) + "px" });
      this.tip.hidden = false;
    });
    c.addEventListener("mouseleave", () => { this.tip.hidden = true; });
    c.addEventListener("mousedown", e => { if (e.button === 0) { drag = pos(e)[0]; this.tip.hidden = true; } });
    window.addEventListener("mouseup", e => {
      if (drag === null) return;
      const start = drag, end = pos(e)[0], f = this.frame;
      drag = null; this.sel.hidden = true;
      if (Math.abs(end - start) < 5 || !f) return;
      const toX = px => f.x0 + (Math.max(f.m.l, Math.min(f.m.l + f.pw, px)) - f.m.l) / f.sx;
      this.onZoom(toX(Math.min(start, end)), toX(Math.max(start, end)));
    });
    c.addEventListener("dblclick", () => this.onZoom(null, null));
  }
}

function fmtNum(v) {
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1e4 || (a < 1e-3 && v !== 0) ? v.toExponential(4) : String(Number(v.toPrecision(6)));
}
