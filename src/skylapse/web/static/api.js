// The services' HTTP API and WebSocket, with the token the user typed once.
// API calls send `Authorization: Bearer`; media elements cannot, so file URLs carry ?token=
// (the services accept it on their GET file endpoints only).

const TOKEN_KEY = "skylapse.token";

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

export function storedToken() {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function storeToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

function detailOf(body) {
  if (!body) return "";
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) return body.detail.map((d) => `${d.field}: ${d.msg}`).join("; ");
  return JSON.stringify(body);
}

export class Api {
  constructor(token, base = "") {
    this.token = token;
    this.base = base;
  }

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.token}` };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(this.base + path, init);
    if (response.status === 401) throw new Unauthorized("the token was refused");
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) throw new ApiError(response.status, detailOf(data));
    return data;
  }

  get(path) { return this.request("GET", path); }
  post(path, body) { return this.request("POST", path, body); }
  put(path, body) { return this.request("PUT", path, body); }
  del(path) { return this.request("DELETE", path); }

  /** A URL for <img>/<video> (which cannot send headers): the token as ?token=. */
  mediaUrl(path) {
    const sep = path.includes("?") ? "&" : "?";
    return `${this.base}${path}${sep}token=${encodeURIComponent(this.token)}`;
  }
}

/** `GET /health` needs no token: it also says which service served the page. */
export async function health(base = "") {
  const response = await fetch(`${base}/health`);
  return response.json();
}

/**
 * The service's /ws: authenticates with a first message (the token stays out of URLs),
 * reconnects with backoff, pings to keep proxies from closing an idle socket.
 */
export class LiveSocket {
  constructor(token, { onEvent, onState, onRefused, base = location.origin }) {
    this.token = token;
    this.url = base.replace(/^http/, "ws") + "/ws";
    this.onEvent = onEvent;
    this.onState = onState || (() => {});
    this.onRefused = onRefused || (() => {});
    this.delay = 500;
    this.closed = false;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    this.onState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.binaryType = "blob";
    ws.onopen = () => {
      ws.send(JSON.stringify({ token: this.token }));
      this.ping = setInterval(() => {
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping" }));
      }, 20000);
    };
    ws.onmessage = (message) => {
      this.delay = 500;
      this.onState("live");
      if (typeof message.data !== "string") {
        this.onEvent({ type: "binary", data: message.data });
        return;
      }
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (event.type !== "pong") this.onEvent(event);
    };
    ws.onclose = (close) => {
      clearInterval(this.ping);
      if (this.closed) return;
      if (close.code === 4401) {
        this.onState("refused");
        this.onRefused();
        return;
      }
      this.onState("reconnecting");
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 15000);
    };
  }

  close() {
    this.closed = true;
    clearInterval(this.ping);
    if (this.ws) this.ws.close(1000);
  }
}
