// The capture service's view: live preview, status and settings, the day's sun and exposure,
// storage and transfer, manual capture and sessions, the recent frames.

import { ringGauge, sunChart } from "./charts.js";
import {
  definitionList, fill, fmtDateTime, fmtExposure, fmtNumber, h, timeFormatter,
} from "./dom.js";
import { elevationCurve } from "./sun.js";

const RECENT = 12;
const CHART_FRAMES_MAX = 5000;

/**
 * The photographic exposure value of the settings a frame was taken with, at ISO 100:
 * EV100 = log2(N²/t) − log2(ISO/100). It follows the scene's light (high by day, low at
 * night), so it reads against the sun's elevation.
 */
export function frameEv100(frame) {
  const t = frame.exposure_time_s;
  if (!(t > 0)) return null;
  const iso = frame.iso > 0 ? frame.iso : frame.analogue_gain > 0 ? 100 * frame.analogue_gain : 100;
  const n = frame.aperture > 0 ? frame.aperture : 1;
  return Math.log2((n * n) / t) - Math.log2(iso / 100);
}

function base64ToBlob(b64, type) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

const phaseLabel = (p) => (p || "–").replace(/_/g, " ");

export class CaptureView {
  constructor(root, api, notify) {
    this.root = root;
    this.api = api;
    this.notify = notify;
    this.status = null;
    this.schedule = null;
    this.config = null;
    this.chartFrames = new Map(); // id -> {t, ev}
    this.recent = []; // newest first
    this.thumbs = new Map(); // id -> object URL
    this.previewAt = null;
    this.previewUrl = null;
    const $ = (s) => root.querySelector(s);
    this.el = {
      preview: $("#preview"), previewCaption: $("#preview-caption"), now: $("#now"),
      settings: $("#settings"), chart: $("#sun-chart"), gauges: $("#capture-gauges"),
      frames: $("#frames"), captureNow: $("#capture-now"), session: $("#session-toggle"),
      interval: $("#session-interval"),
    };
    this.onCapture = () => this.captureNow();
    this.onSession = () => this.toggleSession();
  }

  async start() {
    const [status, schedule, config] = await Promise.all([
      this.api.get("/status"), this.api.get("/schedule"), this.api.get("/config"),
    ]);
    this.setSchedule(schedule);
    this.config = config;
    this.fmtTime = timeFormatter(schedule.timezone);
    this.fmtTimeS = timeFormatter(schedule.timezone, true);
    this.el.captureNow.addEventListener("click", this.onCapture);
    this.el.session.addEventListener("click", this.onSession);
    this.showStatus(status);
    this.showSettings();
    await this.loadFrames();
    this.drawChart();
    // The schedule changes with the day; the chart's "now" line moves.
    this.timer = setInterval(() => this.refreshSchedule().catch(() => {}), 60000);
    let width = this.el.chart.clientWidth;
    this.resize = new ResizeObserver(() => {
      if (this.el.chart.clientWidth !== width) {
        width = this.el.chart.clientWidth;
        this.drawChart();
      }
    });
    this.resize.observe(this.el.chart);
  }

  stop() {
    clearInterval(this.timer);
    this.resize?.disconnect();
    this.el.captureNow.removeEventListener("click", this.onCapture);
    this.el.session.removeEventListener("click", this.onSession);
  }

  onEvent(event) {
    switch (event.type) {
      case "status": this.showStatus(event.status); break;
      case "preview": this.showPreview(event); break;
      case "frame": this.addFrames([event.record]); break;
      case "session_started":
      case "session_stopped":
        this.api.get("/status").then((s) => this.showStatus(s)).catch(() => {});
        break;
      case "alert":
        if (event.alert.state === "firing") this.notify(`${event.alert.title}: ${event.alert.detail}`, true);
        break;
      default: break;
    }
  }

  // -- live preview ---------------------------------------------------------------------

  showPreview(message) {
    if (message.frame_at === this.previewAt) return;
    this.previewAt = message.frame_at;
    const url = URL.createObjectURL(base64ToBlob(message.jpeg_base64, message.content_type));
    const old = this.previewUrl;
    this.previewUrl = url;
    const img = this.el.preview;
    img.src = url;
    img.width = message.width;
    img.height = message.height;
    img.alt = `Live preview from the camera, frame taken at ${this.fmtTimeS(message.frame_at)}`;
    img.dataset.frameAt = message.frame_at;
    if (old) setTimeout(() => URL.revokeObjectURL(old), 1000);
    this.el.previewCaption.textContent = `frame at ${this.fmtTimeS(message.frame_at)}` +
      (message.session_id ? ` · session ${message.session_id}` : " · no session running");
  }

  // -- status ---------------------------------------------------------------------------

  showStatus(s) {
    this.status = s;
    const session = s.session && s.state === "capturing" ? s.session : null;
    const last = this.recent[0];
    const exposure = last
      ? `${fmtExposure(last.exposure_time_s)} · ISO ${fmtNumber(last.iso, 0)} · ` +
        `EV ${fmtNumber(frameEv100(last))}`
      : "–";
    const pairs = [
      ["State", s.state === "capturing" ? `capturing (${session?.session_id})` : "idle"],
      ["Phase", h("span", { class: `phase-badge ${s.phase}` }, phaseLabel(s.phase))],
      ["Sun", `${fmtNumber(s.sun_elevation_deg)}°`],
      ["Strategy", `${s.strategy} · every ${fmtNumber(s.interval_s, 0)} s · sky ${s.sky}`],
      ["Last exposure", exposure],
      ["Camera", !s.camera_ok ? h("span", { class: "error" }, s.camera_error || "not answering")
        : s.camera_notice ? h("span", { class: "error" }, `${s.camera} — ${s.camera_notice}`)
        : `${s.camera} · focus ${s.focus_method}`],
      ["Last frame", s.last_frame_at ? this.fmtTimeS(s.last_frame_at) : "none yet"],
    ];
    if (session) {
      pairs.push(["Session", `${session.written} written, ${session.failed} failed, ` +
        `${session.skipped_deadlines} skipped · latency p99 ${fmtNumber(session.latency_ms_p99)} ms`]);
    }
    if (s.window) {
      pairs.push(["Window", `${s.window.session_id} ${this.fmtTime(s.window.start)}–` +
        `${this.fmtTime(s.window.end)}${s.window.open ? " (open)" : ""}`]);
    }
    const alerts = (s.alerts || []).map((a) => h("li", { class: a.severity === "critical" ? "error" : "" },
      `${a.title}: ${a.detail}`));
    fill(this.el.now, definitionList(pairs), alerts.length ? h("ul", { class: "alerts" }, alerts) : null);

    const running = s.state === "capturing";
    this.el.session.textContent = running ? "Stop session" : "Start session";
    this.el.session.dataset.sessionId = running ? session?.session_id ?? "" : "";
    this.el.interval.disabled = running;
    this.el.captureNow.disabled = !s.camera_ok && s.camera_error != null;
    this.showGauges(s);
  }

  showGauges(s) {
    const used = s.storage?.utilization_pct;
    const mark = s.storage?.watermark_pct ?? 90;
    const stored = s.frames?.stored ?? 0;
    const waiting = s.frames?.awaiting_transfer ?? 0;
    const t = s.transfer;
    const gauges = [
      ringGauge({
        fraction: used / 100, label: `${fmtNumber(used, 0)} %`, caption: "Storage used",
        warn: (mark - 10) / 100, alarm: mark / 100,
        valueText: `${fmtNumber(used, 1)} % of the buffer's disk used; cleanup above ${mark} %`,
      }),
      ringGauge({
        fraction: t ? (stored ? (stored - waiting) / stored : 1) : null,
        label: t ? `${waiting}` : "off", caption: t ? "Waiting to transfer" : "Transfer",
        warn: 2, alarm: 2,
        valueText: t ? `${waiting} of ${stored} frames waiting for transfer` : "transfer off",
      }),
    ];
    const facts = [
      ["Frames in buffer", String(stored)],
      ["Deleted", Object.entries(s.storage?.deleted || {}).filter(([, v]) => v)
        .map(([k, v]) => `${v} by ${k.replace(/_/g, " ")}`).join(", ") || "none"],
      ["Writer queue", `${s.writer?.queue_depth ?? "–"} (max ${s.writer?.max_queue_depth ?? "–"})`],
    ];
    if (t) {
      facts.push(["Sent", `${t.frames_sent} frames to ${t.host}`]);
      facts.push(["Last verified", t.last_success ? fmtDateTime(t.last_success) : "never"]);
      if (t.last_error) facts.push(["Last error", h("span", { class: "error" }, t.last_error)]);
    } else {
      facts.push(["Transfer", "no transfer host configured"]);
    }
    fill(this.el.gauges, gauges, definitionList(facts));
  }

  showSettings() {
    const c = this.config;
    const loc = c.location;
    const phases = (c.schedule?.phases || []).map((p) => `${phaseLabel(p.name)} ${p.interval_s} s`);
    fill(this.el.settings, definitionList([
      ["Location", `${fmtNumber(loc.latitude, 4)}, ${fmtNumber(loc.longitude, 4)} · ` +
        `${fmtNumber(loc.elevation_m, 0)} m · ${loc.timezone}`],
      ["Intervals", phases.join(", ") || "–"],
      ["HDR", c.capture.hdr ? "on where the strategy brackets" : "off"],
      ["Camera", `${c.capture.camera}${c.capture.resolution ? ` at ${c.capture.resolution.join("×")}` : ""}`],
      ["JPEG quality", String(c.capture.jpeg_quality)],
      ["Retention", `${c.capture.retention_h} h · cleanup above ${c.capture.watermark_pct} %`],
      ["Unattended", c.capture.unattended ? "yes: sessions by the plan" : "no"],
    ]));
  }

  async refreshSchedule() {
    this.setSchedule(await this.api.get("/schedule"));
    this.drawChart();
  }

  setSchedule(schedule) {
    this.schedule = schedule;
    // The station's clock, not the browser's, places "now" on the chart.
    this.clockOffset = Date.parse(schedule.now) - Date.now();
  }

  // -- frames ---------------------------------------------------------------------------

  async loadFrames() {
    const since = encodeURIComponent(this.schedule.phases[0]?.start ?? new Date().toISOString());
    let offset = 0;
    const frames = [];
    // Oldest first, paged: today's frames for the chart, the newest for the list.
    while (offset !== null && frames.length < CHART_FRAMES_MAX) {
      const page = await this.api.get(`/frames?since=${since}&limit=1000&offset=${offset}`);
      frames.push(...page.frames);
      offset = page.next_offset;
    }
    this.addFrames(frames, false);
  }

  addFrames(frames, redraw = true) {
    let changed = false;
    for (const f of frames) {
      const ev = frameEv100(f);
      if (ev !== null && !this.chartFrames.has(f.id)) {
        this.chartFrames.set(f.id, { t: Date.parse(f.captured_at), ev });
        changed = true;
      }
      if (!this.recent.some((r) => r.id === f.id)) this.recent.push(f);
    }
    this.recent.sort((a, b) => (a.captured_at < b.captured_at ? 1 : -1));
    for (const gone of this.recent.splice(RECENT)) {
      const url = this.thumbs.get(gone.id);
      if (url) URL.revokeObjectURL(url);
      this.thumbs.delete(gone.id);
    }
    this.renderFrames();
    if (this.status) this.showStatus(this.status); // "last exposure" follows the newest frame
    if (changed && redraw) this.drawChart();
  }

  renderFrames() {
    if (!this.recent.length) {
      fill(this.el.frames, h("li", { class: "empty" }, "No frames yet."));
      return;
    }
    const items = this.recent.map((f) => {
      let li = this.el.frames.querySelector(`li[data-frame-id="${f.id}"]`);
      if (li) return li;
      const img = h("img", {
        alt: `Frame ${f.id} taken at ${this.fmtTimeS(f.captured_at)}`, width: "96", height: "54",
      });
      this.loadThumb(f, img);
      const bracket = f.bracket ? ` · bracket ${f.bracket.index + 1} (${fmtNumber(f.bracket.ev_offset)} EV)` : "";
      li = h("li", { class: "frame-item", "data-frame-id": String(f.id) },
        img,
        h("div", {},
          h("div", { class: "when" }, this.fmtTimeS(f.captured_at), " ",
            h("span", { class: `phase-badge ${f.phase}` }, phaseLabel(f.phase)),
            f.extra?.manual ? h("span", { class: "badge" }, "manual") : null),
          h("div", { class: "detail" },
            `${fmtExposure(f.exposure_time_s)} · ISO ${fmtNumber(f.iso, 0)} · EV ${fmtNumber(frameEv100(f))}` +
            `${bracket} · quality ${fmtNumber(f.quality_score, 2)} · ${f.transfer_state}`)));
      return li;
    });
    fill(this.el.frames, items);
  }

  async loadThumb(frame, img) {
    // Fetched with the Authorization header and shown from a blob: no token in the URL.
    try {
      const response = await fetch(`${frame.image_url}?size=thumb`, {
        headers: { Authorization: `Bearer ${this.api.token}` },
      });
      if (!response.ok) return;
      const url = URL.createObjectURL(await response.blob());
      if (!this.recent.some((r) => r.id === frame.id)) {
        URL.revokeObjectURL(url);
        return;
      }
      this.thumbs.set(frame.id, url);
      img.src = url;
    } catch {
      /* the list still shows the frame's facts */
    }
  }

  // -- actions --------------------------------------------------------------------------

  async captureNow() {
    const button = this.el.captureNow;
    button.disabled = true;
    try {
      const { frames } = await this.api.post("/capture", { bracket: false });
      this.addFrames(frames);
      this.notify(`Captured frame ${frames.map((f) => f.id).join(", ")}.`);
    } catch (err) {
      this.notify(`Capture failed: ${err.message}`, true);
    } finally {
      button.disabled = false;
    }
  }

  async toggleSession() {
    const button = this.el.session;
    button.disabled = true;
    try {
      if (this.status?.state === "capturing") {
        const id = button.dataset.sessionId;
        await this.api.del(`/sessions/${encodeURIComponent(id)}`);
        this.notify(`Session ${id} stopping.`);
      } else {
        const interval = Number(this.el.interval.value);
        const body = interval > 0 ? { interval_s: interval } : {};
        const { session_id: id, status } = await this.api.post("/sessions", body);
        this.showStatus(status);
        this.notify(`Session ${id} started.`);
      }
      this.showStatus(await this.api.get("/status"));
    } catch (err) {
      this.notify(`Session: ${err.message}`, true);
    } finally {
      button.disabled = false;
    }
  }

  // -- chart ----------------------------------------------------------------------------

  drawChart() {
    const sch = this.schedule;
    if (!sch?.phases?.length) return;
    const start = Date.parse(sch.phases[0].start);
    const end = Date.parse(sch.phases[sch.phases.length - 1].end);
    const samples = elevationCurve(start, end, sch.location.latitude, sch.location.longitude);
    const bands = sch.phases
      .filter((p) => p.phase === "golden_hour" || p.phase === "blue_hour")
      .map((p) => ({ start: Date.parse(p.start), end: Date.parse(p.end), kind: p.phase.split("_")[0] }));
    const frames = [...this.chartFrames.values()];
    fill(this.el.chart, sunChart({
      width: this.el.chart.clientWidth || 640,
      samples, bands, frames, now: Date.now() + this.clockOffset,
      formatTime: this.fmtTime,
      title: `Sun elevation and exposure on ${sch.date} (${sch.timezone})`,
    }));
  }
}
