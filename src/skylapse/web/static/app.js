// Skylapse dashboard: one page for both services. `GET /health` (no token) says which service
// served it; the page then shows that service's view. The token is asked for once and kept in
// localStorage.

import { Api, LiveSocket, Unauthorized, health, storeToken, storedToken } from "./api.js";

const $ = (sel) => document.querySelector(sel);

const VIEWS = {
  capture: () => import("./capture.js").then((m) => m.CaptureView),
  processing: () => import("./processing.js").then((m) => m.ProcessingView),
};

let current = null; // {view, socket}
let service = null;

function notify(message, isError = false) {
  const box = $("#notice");
  box.textContent = message;
  box.className = isError ? "notice error" : "notice";
  box.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { box.hidden = true; }, isError ? 8000 : 4000);
}

function setConnection(state) {
  const pill = $("#connection");
  const labels = {
    live: "live", connecting: "connecting…", reconnecting: "reconnecting…",
    refused: "token refused", offline: "offline",
  };
  pill.textContent = labels[state] || state;
  pill.dataset.state = state;
}

function showLogin(message = "") {
  stop();
  $("#login").hidden = false;
  $("#logout").hidden = true;
  for (const view of document.querySelectorAll("main.view")) view.hidden = true;
  $("#login-error").textContent = message;
  $("#token-input").focus();
  setConnection("offline");
}

function stop() {
  if (!current) return;
  current.socket?.close();
  current.view.stop();
  current = null;
}

async function start(token) {
  stop();
  const api = new Api(token);
  const root = $(`#${service}-view`);
  const View = await VIEWS[service]();
  const view = new View(root, api, notify);
  try {
    await view.start();
  } catch (err) {
    view.stop();
    if (err instanceof Unauthorized) {
      storeToken(null);
      showLogin("That token was refused. Check the service's api.token.");
      return;
    }
    throw err;
  }
  $("#login").hidden = true;
  $("#logout").hidden = false;
  root.hidden = false;
  const socket = new LiveSocket(token, {
    onEvent: (event) => view.onEvent(event),
    onState: setConnection,
    onRefused: () => { storeToken(null); showLogin("The token was refused."); },
  });
  current = { view, socket };
}

async function main() {
  let info;
  try {
    info = await health();
  } catch {
    $("#service-name").textContent = "(service unreachable)";
    return;
  }
  service = info.service in VIEWS ? info.service : "processing";
  document.body.dataset.service = service;
  $("#service-name").textContent = service;
  document.title = `Skylapse ${service}`;
  const health_ = $("#health");
  const showHealth = (h) => {
    health_.textContent = h.status;
    health_.dataset.state = h.status;
    health_.title = Object.entries(h.checks || {})
      .map(([k, c]) => `${k}: ${c.status} (${c.detail})`).join("\n");
  };
  showHealth(info);
  setInterval(() => health().then(showHealth).catch(() => {}), 15000);

  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("#token-input").value.trim();
    if (!token) return;
    storeToken(token);
    $("#token-input").value = "";
    await start(token);
  });
  $("#logout").addEventListener("click", () => {
    storeToken(null);
    showLogin();
  });

  const token = storedToken();
  if (token) await start(token);
  else showLogin();
}

main().catch((err) => notify(`Dashboard error: ${err.message}`, true));
