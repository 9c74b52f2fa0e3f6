/**
 * A WebSocket-shaped object over Server-Sent Events (PROTOCOL.md, "Extension:
 * Server-Sent Events"), for the client's fallback when WebSockets cannot
 * connect (a proxy that drops upgrades, a network that blocks them).
 *
 * The client talks to it as to its WebSocket: it `send`s subscribe,
 * unsubscribe, ping and cancel frames and hears the same server frames. Here
 * the subscriptions become one EventSource on `<api>/events/?task=..&token=..`
 * (reopened when they change; the browser itself resumes a dropped stream with
 * Last-Event-ID), a ping is answered at once (EventSource finds dead streams
 * itself), and a cancel is the HTTP API's POST. No dependencies.
 */

// readyState values, as the client reads them: a WebSocket's (CLOSED is 3 there)...
const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;
// ...and an EventSource's own CLOSED (2): it gave up, it will not reconnect.
const SOURCE_CLOSED = 2;

// Close codes it reports, as the WebSocket would (client.js tells them apart).
const CLOSE_ABNORMAL = 1006;
const CLOSE_TRY_AGAIN_LATER = 4013;

// The server frames a stream carries, as SSE event names (`event:` is the frame's type).
const FRAME_EVENTS = ["snapshot", "event", "resumed", "error"];
// HTTP answers that retrying later may fix (the rest refuse the request itself).
const LATER_STATUSES = new Set([429, 503]);

/** `<meta name="taskpulse-sse-url">`, else the example site's `/api/events/`. */
export function defaultSseUrl() {
  const meta = document.querySelector('meta[name="taskpulse-sse-url"]');
  return new URL(meta?.content || "/api/events/", location.href).href;
}

/** The HTTP API's cancel address, next to the events endpoint (`<api>/tasks/<id>/cancel/`). */
export function cancelUrl(sseUrl, taskId) {
  // `<prefix>events/` -> `<prefix>tasks/<id>/cancel/`
  return new URL(`../tasks/${encodeURIComponent(taskId)}/cancel/`, new URL(sseUrl)).href;
}

export class SseSocket {
  constructor(url, {
    EventSourceImpl = globalThis.EventSource,
    // Called as a plain function: `fetch` throws "Illegal invocation" as a method of another object.
    fetchImpl = (...args) => globalThis.fetch(...args),
  } = {}) {
    this.url = url;
    this.readyState = CONNECTING;
    this.onopen = this.onmessage = this.onclose = null;
    this._EventSource = EventSourceImpl;
    this._fetch = fetchImpl;
    this._tasks = new Map(); // task id -> token, in the order they were subscribed
    this._source = null;
    this._reopen = null; // a pending reopen, so a burst of subscribes opens once
    // Open "at once", as a WebSocket would: the client then sends its subscribes.
    queueMicrotask(() => {
      if (this.readyState !== CONNECTING) return;
      this.readyState = OPEN;
      this.onopen?.();
    });
  }

  send(text) {
    const frame = JSON.parse(text);
    if (frame.type === "subscribe") {
      this._tasks.set(frame.task_id, frame.token);
      this._reopenSoon();
    } else if (frame.type === "unsubscribe") {
      this._tasks.delete(frame.task_id);
      this._reopenSoon();
      this._deliver({ type: "unsubscribed", task_id: frame.task_id });
    } else if (frame.type === "ping") {
      this._deliver({ type: "pong", id: frame.id });
    } else if (frame.type === "cancel") {
      this._cancel(frame.task_id, frame.token);
    }
  }

  close() {
    this.readyState = CLOSED;
    clearTimeout(this._reopen);
    this._source?.close();
    this._source = null;
  }

  _reopenSoon() {
    clearTimeout(this._reopen);
    this._reopen = setTimeout(() => this._open(), 0);
  }

  _open() {
    this._source?.close();
    this._source = null;
    if (this.readyState === CLOSED || this._tasks.size === 0) return;
    const query = new URLSearchParams();
    for (const [taskId, token] of this._tasks) {
      query.append("task", taskId);
      query.append("token", token);
    }
    const url = `${this.url}${this.url.includes("?") ? "&" : "?"}${query}`;
    const source = new this._EventSource(url);
    this._source = source;
    for (const name of FRAME_EVENTS) {
      source.addEventListener(name, (event) => {
        // A server `error` frame is a MessageEvent with data; the connection's is not.
        if (source === this._source && typeof event.data === "string") this._frame(event.data);
      });
    }
    source.addEventListener("end", () => {
      // Every task is final: stop here (a reconnect would get 204 anyway).
      source.close();
      if (source === this._source) this._source = null;
    });
    source.addEventListener("error", (event) => {
      if (typeof event.data === "string" || source !== this._source) return;
      // CONNECTING: the browser reconnects (and resumes) by itself.
      if (source.readyState === SOURCE_CLOSED) this._refused(url);
    });
  }

  /** The stream was refused (not a 200 event stream): ask why, with the same request. */
  async _refused(url) {
    this._source = null;
    let response;
    try {
      response = await this._fetch(url, { headers: { Accept: "text/event-stream" } });
    } catch {
      this._closed(CLOSE_ABNORMAL);
      return;
    }
    if (response.status === 204) return; // every task was final already
    if (response.status === 200 || LATER_STATUSES.has(response.status)) {
      response.body?.cancel().catch(() => {});
      this._closed(response.status === 200 ? CLOSE_ABNORMAL : CLOSE_TRY_AGAIN_LATER);
      return;
    }
    const error = (await response.json().catch(() => null))?.error;
    const named = [...this._tasks.keys()].filter((taskId) => error?.detail?.includes(taskId));
    if (!error || response.status === 404 || (response.status === 403 && !named.length)) {
      // No events endpoint here, or this page's origin is refused: the connection
      // itself is refused, as the WebSocket's handshakes were.
      this._closed(CLOSE_ABNORMAL, true);
      return;
    }
    const { code, detail } = error;
    // §6's error names the refused task in its detail; else it concerns them all.
    for (const taskId of named.length ? named : [...this._tasks.keys()]) {
      this._tasks.delete(taskId);
      this._deliver({ type: "error", code, detail, task_id: taskId });
    }
    if (this._tasks.size > 0) this._reopenSoon();
  }

  async _cancel(taskId, token) {
    let frame;
    try {
      const response = await this._fetch(cancelUrl(this.url, taskId), {
        method: "POST", headers: { Authorization: `Bearer ${token}` },
      });
      const body = await response.json().catch(() => ({}));
      frame = response.ok
        ? { type: "cancelling", task_id: taskId }
        : { type: "error", task_id: taskId, ...(body.error ?? { code: "unavailable", detail: "" }) };
    } catch {
      frame = { type: "error", task_id: taskId, code: "unavailable", detail: "the cancel was not sent" };
    }
    this._deliver(frame);
  }

  _closed(code, refused = false) {
    if (this.readyState === CLOSED) return;
    this.close();
    this.onclose?.({ code, reason: "", refused });
  }

  _frame(data) {
    if (this.readyState === OPEN) this.onmessage?.({ data });
  }

  _deliver(frame) {
    queueMicrotask(() => this._frame(JSON.stringify(frame)));
  }
}
