// The processing service's view: sequences, jobs with live progress, the gallery.

import { ringGauge } from "./charts.js";
import { definitionList, fill, fmtBytes, fmtDateTime, fmtNumber, h } from "./dom.js";

const FINISHED = new Set(["done", "failed", "cancelled"]);

export function parsePrometheus(text) {
  const values = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    values[line.slice(0, space)] = Number(line.slice(space + 1));
  }
  return values;
}

export class ProcessingView {
  constructor(root, api, notify) {
    this.root = root;
    this.api = api;
    this.notify = notify;
    this.jobs = new Map();
    this.jobItems = new Map();
    this.galleryKey = "";
    this.el = {
      gauges: root.querySelector("#processing-gauges"),
      sequences: root.querySelector("#sequences"),
      jobs: root.querySelector("#jobs"),
      gallery: root.querySelector("#gallery"),
    };
  }

  async start() {
    await Promise.all([this.refreshSequences(), this.refreshJobs(), this.refreshGallery(),
      this.refreshGauges()]);
    this.timer = setInterval(() => {
      this.refreshGauges().catch(() => {});
      this.refreshSequences().catch(() => {});
    }, 10000);
  }

  stop() { clearInterval(this.timer); }

  onEvent(event) {
    if (event.type === "snapshot") {
      for (const job of event.jobs) this.jobs.set(job.id, job);
      this.renderJobs();
    } else if (event.type === "job") {
      const before = this.jobs.get(event.job.id);
      this.jobs.set(event.job.id, event.job);
      this.renderJobs();
      if (event.job.state === "done" && before?.state !== "done") this.refreshGallery();
    } else if (event.type === "alert" && event.alert.state === "firing") {
      this.notify(`${event.alert.title}: ${event.alert.detail}`, true);
    } else if (event.type === "progress") {
      const job = this.jobs.get(event.job_id);
      if (job && !FINISHED.has(job.state)) {
        job.progress = Math.max(job.progress, event.progress);
        job.state = "running";
        this.updateJobItem(job);
      }
    }
  }

  // -- gauges -----------------------------------------------------------------------------

  async refreshGauges() {
    const [text, health] = await Promise.all([
      this.api.get("/metrics"),
      fetch("/health").then((r) => r.json()),
    ]);
    const m = parsePrometheus(text);
    const disk = m.storage_utilization_pct;
    const depth = m.processing_queue_depth ?? 0;
    const received = m.frames_transferred_total ?? 0;
    fill(this.el.gauges,
      ringGauge({ fraction: disk / 100, label: `${fmtNumber(disk, 0)} %`, caption: "Disk used" }),
      ringGauge({
        fraction: Math.min(1, depth / 10), label: String(depth), caption: "Jobs queued",
        warn: 0.5, alarm: 0.9, valueText: `${depth} jobs queued or running`,
      }),
      definitionList([
        ["Frames received", String(received)],
        ["Last render", m.render_frames_per_second ? `${fmtNumber(m.render_frames_per_second)} frames/s` : "–"],
        ["Workers", health.checks?.workers?.detail ?? "–"],
        ["Ingest", health.checks?.ingest?.detail ?? "–"],
      ]),
    );
  }

  // -- sequences --------------------------------------------------------------------------

  async refreshSequences() {
    const sequences = await this.api.get("/sequences");
    if (!sequences.length) {
      fill(this.el.sequences, h("p", { class: "empty" }, "No sequences ingested yet."));
      return;
    }
    const rows = sequences.slice().reverse().map((s) => h("tr", {},
      h("td", { "data-label": "Sequence" }, `#${s.id} ${s.station}`),
      h("td", { "data-label": "Camera" }, s.camera),
      h("td", { "data-label": "Frames" }, String(s.frames)),
      h("td", { "data-label": "From" }, fmtDateTime(s.first_at)),
      h("td", { "data-label": "To" }, fmtDateTime(s.last_at)),
      h("td", { "data-label": "Phases" }, s.phases.join(", ") || "–"),
      h("td", {}, h("button", {
        type: "button", class: "small",
        "aria-label": `Render sequence ${s.id}`,
        onclick: (e) => this.render(s, e.currentTarget),
      }, "Render")),
    ));
    fill(this.el.sequences, h("table", { class: "table" },
      h("thead", {}, h("tr", {}, ["Sequence", "Camera", "Frames", "From", "To", "Phases", ""]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows)));
  }

  async render(sequence, button) {
    button.disabled = true;
    try {
      // H.265 to keep, H.264 so that every browser can play the preview; the bracket sets the
      // capture recorded are fused (the API's default brackets, "capture").
      const job = await this.api.post("/jobs", {
        sequence_id: sequence.id, options: { formats: ["h265", "h264"] },
      });
      this.jobs.set(job.id, job);
      this.renderJobs();
      this.notify(`Render of sequence ${sequence.id} queued.`);
    } catch (err) {
      this.notify(`Could not queue the render: ${err.message}`, true);
    } finally {
      button.disabled = false;
    }
  }

  // -- jobs -------------------------------------------------------------------------------

  async refreshJobs() {
    for (const job of await this.api.get("/jobs?limit=50")) this.jobs.set(job.id, job);
    this.renderJobs();
  }

  renderJobs() {
    const jobs = [...this.jobs.values()]
      .sort((a, b) => (a.created_at < b.created_at ? 1 : -1)).slice(0, 50);
    if (!jobs.length) {
      this.jobItems.clear();
      fill(this.el.jobs, h("li", { class: "empty" }, "No jobs yet."));
      return;
    }
    const items = jobs.map((job) => {
      let li = this.jobItems.get(job.id);
      if (!li) {
        li = h("li", { class: "job", "data-job-id": job.id });
        this.jobItems.set(job.id, li);
      }
      this.updateJobItem(job, li);
      return li;
    });
    fill(this.el.jobs, items);
  }

  updateJobItem(job, li = this.jobItems.get(job.id)) {
    if (!li) return;
    const key = `${job.state}|${job.progress}|${job.attempts}|${job.error}`;
    if (li.dataset.key === key) return;
    li.dataset.key = key;
    li.dataset.state = job.state;
    const pct = Math.round((job.progress || 0) * 100);
    const what = job.kind === "render"
      ? `Render of sequence ${job.sequence_id ?? "?"}${job.phase ? ` (${job.phase})` : ""}`
      : `${job.kind} job`;
    const actions = [];
    if (job.state === "queued" || job.state === "running") {
      actions.push(h("button", {
        type: "button", class: "small danger", "aria-label": `Cancel job ${job.id}`,
        onclick: (e) => this.act(job, "cancel", e.currentTarget),
      }, "Cancel"));
    }
    if (job.state === "failed" || job.state === "cancelled") {
      actions.push(h("button", {
        type: "button", class: "small", "aria-label": `Retry job ${job.id}`,
        onclick: (e) => this.act(job, "retry", e.currentTarget),
      }, "Retry"));
    }
    const bar = h("progress", {
      max: "1", value: String(job.progress || 0), "aria-label": `Progress of job ${job.id}`,
    });
    fill(li,
      h("div", { class: "job-head" },
        h("span", { class: "job-title" }, what),
        h("span", { class: `badge ${job.state}` }, job.state)),
      h("div", { class: "job-progress" }, bar, h("span", { class: "pct" }, `${pct} %`)),
      h("div", { class: "job-meta" },
        `${job.id} · queued ${fmtDateTime(job.created_at)}`,
        job.attempts > 1 ? ` · attempt ${job.attempts}` : "",
        job.result?.render_fps ? ` · ${fmtNumber(job.result.render_fps)} frames/s` : ""),
      job.error ? h("div", { class: "job-error" }, job.error) : null,
      actions.length ? h("div", { class: "job-actions" }, actions) : null,
    );
  }

  async act(job, action, button) {
    button.disabled = true;
    try {
      const updated = await this.api.post(`/jobs/${job.id}/${action}`);
      this.jobs.set(updated.id, updated);
      this.renderJobs();
    } catch (err) {
      button.disabled = false;
      this.notify(`Could not ${action} job ${job.id}: ${err.message}`, true);
    }
  }

  // -- gallery ----------------------------------------------------------------------------

  async refreshGallery() {
    const timelapses = await this.api.get("/timelapses");
    const key = timelapses.map((t) => t.job_id + t.files.map((f) => f.name).join()).join("|");
    if (key === this.galleryKey) return;
    this.galleryKey = key;
    if (!timelapses.length) {
      fill(this.el.gallery, h("p", { class: "empty" }, "No finished timelapses yet."));
      return;
    }
    // Cards are kept by job: a new timelapse does not restart the ones playing.
    const cards = new Map();
    for (const t of timelapses) {
      const cardKey = t.job_id + t.files.map((f) => f.name).join();
      const old = this.cards?.get(t.job_id);
      cards.set(t.job_id, old && old.dataset.key === cardKey ? old : this.timelapseCard(t, cardKey));
    }
    this.cards = cards;
    fill(this.el.gallery, [...cards.values()]);
  }

  timelapseCard(t, cardKey) {
    const byKind = Object.fromEntries(t.files.map((f) => [f.kind, f]));
    const title = `Sequence ${t.sequence_id ?? "?"}${t.phase ? ` · ${t.phase}` : ""}`;
    // The H.264 preview plays everywhere; the H.265 master only where the browser decodes it.
    const sources = [byKind.preview, byKind.video].filter(Boolean)
      .map((f) => h("source", { src: this.api.mediaUrl(f.url), type: f.media_type }));
    const video = sources.length
      ? h("video", {
        controls: true, playsinline: true, muted: true, loop: true, preload: "metadata",
        "aria-label": `Timelapse: ${title}`,
      }, sources, "Your browser cannot play this video.")
      : null;
    if (video) {
      video.muted = true;
      // Every source failed (e.g. only H.265 and no decoder here): say so, keep the links.
      sources[sources.length - 1].addEventListener("error", () => {
        video.replaceWith(h("p", { class: "cannot-play" },
          "This browser cannot play this video's codec; download it below."));
      });
    }
    const keogram = byKind.keogram
      ? h("figure", { class: "keogram" },
        h("img", {
          src: this.api.mediaUrl(byKind.keogram.url), loading: "lazy",
          alt: `Keogram of ${title}: the sky's colours over time, one column per frame`,
        }),
        h("figcaption", {}, "Keogram"))
      : null;
    const names = { video: "Video", preview: "H.264 preview", contact_sheet: "Contact sheet" };
    const links = t.files.filter((f) => f.kind !== "keogram").map((f) => h("a", {
      href: this.api.mediaUrl(f.url), target: "_blank", rel: "noopener",
    }, `${names[f.kind] || f.name} (${fmtBytes(f.size_bytes)})`));
    return h("article", { class: "timelapse", "data-job-id": t.job_id, "data-key": cardKey },
      video,
      h("h3", {}, title),
      h("p", { class: "meta" },
        `${t.frames ?? "?"} frames · ${fmtDateTime(t.finished_at)}`,
        t.render_fps ? ` · rendered at ${fmtNumber(t.render_fps)} frames/s` : "",
        t.files.some((f) => f.archived) ? " · archived" : ""),
      keogram,
      h("p", { class: "links" }, links));
  }
}
