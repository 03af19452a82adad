// Small SVG charts drawn by hand: a ring gauge and the day's sun-elevation + exposure chart.

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, children = []) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, v);
  for (const child of children) el.append(child);
  return el;
}

function text(x, y, content, attrs = {}) {
  const el = svg("text", { x, y, ...attrs });
  el.textContent = content;
  return el;
}

/**
 * A ring gauge: `fraction` in 0..1 (null: unknown) with a big label inside and a caption.
 * Warn/alarm thresholds colour the ring. Returns a <div role="meter">.
 */
export function ringGauge({ fraction, label, caption, warn = 0.8, alarm = 0.95, valueText }) {
  const r = 40;
  const circumference = 2 * Math.PI * r;
  const f = fraction == null || Number.isNaN(fraction) ? null : Math.max(0, Math.min(1, fraction));
  const level = f == null ? "unknown" : f >= alarm ? "alarm" : f >= warn ? "warn" : "ok";
  const ring = svg("svg", { viewBox: "0 0 100 100", class: `gauge-ring ${level}`, "aria-hidden": "true" }, [
    svg("circle", { cx: 50, cy: 50, r, class: "track" }),
    f ? svg("circle", {
      cx: 50, cy: 50, r, class: "value",
      "stroke-dasharray": `${(f ?? 0) * circumference} ${circumference}`,
      transform: "rotate(-90 50 50)",
    }) : "",
    text(50, 55, label, { "text-anchor": "middle", class: "gauge-label" }),
  ]);
  const box = document.createElement("div");
  box.className = "gauge";
  box.setAttribute("role", "meter");
  box.setAttribute("aria-valuemin", "0");
  box.setAttribute("aria-valuemax", "100");
  if (f != null) box.setAttribute("aria-valuenow", String(Math.round(f * 100)));
  box.setAttribute("aria-valuetext", valueText || `${caption}: ${label}`);
  box.setAttribute("aria-label", caption);
  const cap = document.createElement("div");
  cap.className = "gauge-caption";
  cap.textContent = caption;
  box.append(ring, cap);
  return box;
}

function niceStep(range, target) {
  const raw = range / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
}

function ticks(lo, hi, target) {
  const step = niceStep(hi - lo || 1, target);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(6));
  return out;
}

/**
 * The day's sun elevation (line), golden and blue hours (shaded), the exposure used per frame
 * (dots, right axis) and now (dashed). Times are epoch milliseconds; `formatTime` labels them
 * (in the station's time zone).
 *
 * data: {samples: [{t, elevation}], bands: [{start, end, kind: "golden"|"blue"}],
 *        frames: [{t, ev}], now, formatTime}
 */
export function sunChart({ samples, bands = [], frames = [], now = null, formatTime, title, width = 640 }) {
  // Drawn at the container's pixel width, so text keeps its size on phones and desktops.
  const W = Math.max(300, Math.round(width)), H = Math.round(Math.min(300, Math.max(200, W * 0.42)));
  const m = { l: 40, r: 34, t: 12, b: 28 };
  const pw = W - m.l - m.r, ph = H - m.t - m.b;
  const t0 = samples[0].t, t1 = samples[samples.length - 1].t;
  const elevations = samples.map((s) => s.elevation);
  const eLo = Math.min(-20, Math.floor(Math.min(...elevations) / 10) * 10);
  const eHi = Math.max(20, Math.ceil(Math.max(...elevations) / 10) * 10);
  const inDay = frames.filter((f) => f.t >= t0 && f.t <= t1 && Number.isFinite(f.ev));
  const evs = inDay.map((f) => f.ev);
  // At least 8 EV tall: a steady exposure should look steady, not like noise magnified.
  const evMid = evs.length ? (Math.min(...evs) + Math.max(...evs)) / 2 : 7;
  const evHalf = Math.max(4, evs.length ? (Math.max(...evs) - Math.min(...evs)) / 2 + 1 : 9);
  const vLo = Math.floor(evMid - evHalf), vHi = Math.ceil(evMid + evHalf);
  const x = (t) => m.l + ((t - t0) / (t1 - t0)) * pw;
  const yE = (e) => m.t + (1 - (e - eLo) / (eHi - eLo)) * ph;
  const yV = (v) => m.t + (1 - (v - vLo) / (vHi - vLo)) * ph;

  const parts = [];
  parts.push(svg("title", {}, [title || "Sun elevation and exposure today"]));
  for (const band of bands) {
    const a = Math.max(t0, band.start), b = Math.min(t1, band.end);
    if (b <= a) continue;
    parts.push(svg("rect", { x: x(a), y: m.t, width: x(b) - x(a), height: ph, class: `band ${band.kind}` }));
  }
  for (const e of ticks(eLo, eHi, 5)) {
    parts.push(svg("line", { x1: m.l, x2: m.l + pw, y1: yE(e), y2: yE(e), class: e === 0 ? "horizon" : "grid" }));
    parts.push(text(m.l - 6, yE(e) + 4, `${e}°`, { "text-anchor": "end", class: "axis sun-axis" }));
  }
  for (const v of ticks(vLo, vHi, 5)) {
    parts.push(text(m.l + pw + 6, yV(v) + 4, `${v}`, { class: "axis ev-axis" }));
  }
  const hour = 3600e3;
  const every = (W < 480 ? 6 : 3) * hour;
  for (let t = Math.ceil(t0 / every) * every; t <= t1; t += every) {
    parts.push(svg("line", { x1: x(t), x2: x(t), y1: m.t + ph, y2: m.t + ph + 4, class: "tick" }));
    parts.push(text(x(t), H - 10, formatTime(t), { "text-anchor": "middle", class: "axis" }));
  }
  parts.push(svg("polyline", {
    class: "sun-line",
    points: samples.map((s) => `${x(s.t).toFixed(1)},${yE(s.elevation).toFixed(1)}`).join(" "),
  }));
  if (inDay.length > 1) {
    parts.push(svg("polyline", {
      class: "ev-line",
      points: inDay.map((f) => `${x(f.t).toFixed(1)},${yV(f.ev).toFixed(1)}`).join(" "),
    }));
  }
  for (const f of inDay) parts.push(svg("circle", { cx: x(f.t), cy: yV(f.ev), r: 2.5, class: "ev-dot" }));
  if (now != null && now >= t0 && now <= t1) {
    parts.push(svg("line", { x1: x(now), x2: x(now), y1: m.t, y2: m.t + ph, class: "now" }));
  }
  parts.push(svg("rect", { x: m.l, y: m.t, width: pw, height: ph, class: "frame" }));

  const peak = samples.reduce((a, b) => (b.elevation > a.elevation ? b : a));
  const desc = `The sun peaks at ${peak.elevation.toFixed(0)}° at ${formatTime(peak.t)}. ` +
    (inDay.length
      ? `${inDay.length} frames, exposure EV ${Math.min(...evs).toFixed(1)} to ${Math.max(...evs).toFixed(1)}.`
      : "No frames yet today.");
  parts.splice(1, 0, svg("desc", {}, [desc]));
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "sun-chart", role: "img", "aria-label": desc }, parts);
}
