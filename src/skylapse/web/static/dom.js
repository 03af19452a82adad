// Tiny DOM helpers and formatting shared by the views.

/** h("div", {class: "x", onclick: fn}, child, "text", ...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function fmtBytes(n) {
  if (n == null) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${units[i]}`;
}

export function fmtNumber(v, digits = 1) {
  return v == null || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
}

export function fmtExposure(seconds) {
  if (seconds == null) return "–";
  if (seconds >= 1) return `${seconds.toFixed(seconds >= 10 ? 0 : 1)} s`;
  return `1/${Math.round(1 / seconds)} s`;
}

/** A formatter of epoch ms (or ISO strings) in the given IANA time zone (default: the browser's). */
export function timeFormatter(timeZone, withSeconds = false) {
  const opts = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  if (withSeconds) opts.second = "2-digit";
  if (timeZone) opts.timeZone = timeZone;
  let f;
  try {
    f = new Intl.DateTimeFormat(undefined, opts);
  } catch {
    delete opts.timeZone;
    f = new Intl.DateTimeFormat(undefined, opts);
  }
  return (t) => (t == null ? "–" : f.format(typeof t === "string" ? new Date(t) : t));
}

export function fmtDateTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

/** Replace a container's children. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

/** A <dl> from [term, value] pairs. */
export function definitionList(pairs, className = "facts") {
  return h("dl", { class: className }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}
