/**
 * TaskPulse browser client: one WebSocket per page carrying every watched task
 * (PROTOCOL.md §4). It reconnects with backoff, resumes each task from the last
 * seq it saw, and finds dead connections with ping/pong. No dependencies.
 */

import { TaskSubscription, TaskError } from "./subscription.js";

export { TaskSubscription, TaskError, FINAL_STATES, UNKNOWN } from "./subscription.js";

/** What `client.status` and `connection` events report. */
export const Status = Object.freeze({
  IDLE: "idle", // nothing to watch, no socket
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting", // waiting out a backoff delay
  OFFLINE: "offline", // the browser says it is offline: wait for `online`
});

export const DEFAULTS = Object.freeze({
  url: null, // null: ws(s)://<this host>/ws/progress/, or <meta name="taskpulse-url">
  minDelay: 500, // backoff: first cap, doubled per failed attempt...
  maxDelay: 20000, // ...up to this cap
  pingInterval: 15000,
  pongTimeout: 10000, // no pong by then: the connection is dead
  connectTimeout: 10000, // a handshake that hangs longer is abandoned
  cancelTimeout: 10000, // no answer to `cancel` by then: reject
  idleTimeout: 30000, // close the socket this long after the last task ended
});

const SOCKET_OPEN = 1; // WebSocket.OPEN, without needing the global in tests
const CLOSE_NORMAL = 1000;

// A refused subscribe that retrying with the same token cannot fix.
const FATAL_SUBSCRIBE_ERRORS = new Set(["forbidden", "bad_task_id", "bad_frame"]);
// "Not now": the subscribe is sent again after a backoff delay.
const RETRY_LATER_ERRORS = new Set(["too_many_subscriptions", "rate_limited", "unavailable"]);

/** Exponential backoff with full jitter: a random delay in [0, min(max, min * 2^attempt)). */
export function backoffDelay(attempt, minDelay, maxDelay, random = Math.random) {
  const cap = Math.min(maxDelay, minDelay * 2 ** attempt);
  return Math.floor(random() * cap);
}

function defaultUrl() {
  const meta = document.querySelector('meta[name="taskpulse-url"]');
  if (meta?.content) return new URL(meta.content, location.href).href.replace(/^http/, "ws");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/progress/`;
}

export class TaskPulseClient extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    this.url = this.options.url ?? defaultUrl();
    this.status = Status.IDLE;
    /** task id -> TaskSubscription, for tasks still being watched (not final). */
    this.subscriptions = new Map();
    this._socket = null;
    this._attempt = 0; // failed connection attempts since the server last answered
    this._heard = false; // has the current socket delivered a frame yet?
    this._retries = 0; // "not now" answers to subscribes since one last succeeded
    this._timers = {};
    this._pingId = 0;
    this._awaitedPong = null;
    this._cancels = new Map(); // task id -> [{resolve, reject, timer}], oldest first
    window.addEventListener("online", () => this._onOnline());
    // Going offline, or a laptop waking up, may have killed the socket without
    // a close event: probe it now rather than at the next ping.
    window.addEventListener("offline", () => this._ping());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this._ping();
    });
  }

  /** Watch a task. Watching one task twice shares one subscription (release each). */
  subscribe(taskId, token) {
    let sub = this.subscriptions.get(taskId);
    if (sub === undefined) {
      sub = new TaskSubscription(this, taskId, token);
      this.subscriptions.set(taskId, sub);
      this._sendSubscribe(sub);
    } else if (token && !sub.token) {
      sub.token = token;
    }
    sub.users += 1;
    this._clearTimer("idle");
    this._ensureConnected();
    return sub;
  }

  /** Ask the server to cancel a task; resolves on `cancelling`, rejects with a TaskError. */
  cancel(taskId, token = this.subscriptions.get(taskId)?.token) {
    return new Promise((resolve, reject) => {
      if (!this._send({ type: "cancel", task_id: taskId, token: token ?? "" })) {
        reject(new TaskError("not connected to the server; try again", { code: "offline", taskId }));
        return;
      }
      const waiter = { resolve, reject };
      waiter.timer = setTimeout(() => {
        this._takeCancel(taskId, waiter);
        reject(new TaskError("the server did not answer the cancel", { code: "timeout", taskId }));
      }, this.options.cancelTimeout);
      if (!this._cancels.has(taskId)) this._cancels.set(taskId, []);
      this._cancels.get(taskId).push(waiter);
    });
  }

  /** Close the socket and stop reconnecting; subscriptions are dropped. */
  close() {
    for (const sub of this.subscriptions.values()) sub.users = 0;
    this.subscriptions.clear();
    this._dropSocket();
    this._clearTimer("reconnect");
    this._setStatus(Status.IDLE);
  }

  // -- called by TaskSubscription ------------------------------------------

  _release(sub) {
    sub.users = Math.max(0, sub.users - 1);
    if (sub.users > 0 || this.subscriptions.get(sub.taskId) !== sub) return;
    this.subscriptions.delete(sub.taskId);
    this._send({ type: "unsubscribe", task_id: sub.taskId });
    this._idleIfUnused();
  }

  _ended(sub) {
    // The server ended it after the final frame (guarantee 4): never resubscribe.
    if (this.subscriptions.get(sub.taskId) === sub) this.subscriptions.delete(sub.taskId);
    this._idleIfUnused();
  }

  // -- connection lifecycle -------------------------------------------------

  _ensureConnected() {
    if (this._socket === null && this.status !== Status.RECONNECTING) this._connect();
  }

  _connect() {
    this._clearTimer("reconnect");
    if (this._socket !== null || this.subscriptions.size === 0) return;
    if (navigator.onLine === false) {
      this._setStatus(Status.OFFLINE);
      return;
    }
    this._setStatus(Status.CONNECTING);
    this._heard = false;
    const socket = new WebSocket(this.url);
    this._socket = socket;
    this._setTimer("connect", () => this._lost(socket), this.options.connectTimeout);
    socket.onopen = () => this._onOpen(socket);
    socket.onmessage = (event) => this._onMessage(socket, event);
    socket.onclose = () => this._lost(socket);
  }

  _onOpen(socket) {
    if (socket !== this._socket) return;
    this._clearTimer("connect");
    this._setStatus(Status.OPEN);
    for (const sub of this.subscriptions.values()) this._sendSubscribe(sub);
    this._setInterval("ping", () => this._ping(), this.options.pingInterval);
    this._idleIfUnused();
  }

  /** The socket closed, timed out or stopped answering: forget it and plan the next try. */
  _lost(socket) {
    if (socket !== this._socket) return;
    this._dropSocket();
    if (this.subscriptions.size === 0) {
      this._setStatus(Status.IDLE);
      return;
    }
    if (navigator.onLine === false) {
      this._setStatus(Status.OFFLINE);
      return;
    }
    const delay = backoffDelay(this._attempt, this.options.minDelay, this.options.maxDelay);
    this._attempt += 1;
    this._setStatus(Status.RECONNECTING, { delay, attempt: this._attempt });
    this._setTimer("reconnect", () => this._connect(), delay);
  }

  _dropSocket() {
    const socket = this._socket;
    this._socket = null;
    for (const name of ["connect", "ping", "pong", "idle", "resubscribe"]) this._clearTimer(name);
    this._awaitedPong = null;
    for (const sub of this.subscriptions.values()) sub.synced = false;
    for (const taskId of [...this._cancels.keys()]) {
      for (const waiter of this._cancels.get(taskId)) {
        clearTimeout(waiter.timer);
        waiter.reject(new TaskError("connection lost before the server answered the cancel",
          { code: "connection_lost", taskId }));
      }
    }
    this._cancels.clear();
    if (socket === null) return;
    // Detach first: a dead TCP connection may take minutes to report its close,
    // and the next socket must not hear from this one.
    socket.onopen = socket.onmessage = socket.onclose = null;
    try {
      socket.close(CLOSE_NORMAL);
    } catch {
      // Closing a socket that never opened can throw; it is gone either way.
    }
  }

  _onOnline() {
    if (this._socket !== null) {
      this._ping();
      return;
    }
    if (this.subscriptions.size === 0) return;
    this._attempt = 0;
    this._connect(); // at once, not after the rest of a backoff delay
  }

  _idleIfUnused() {
    if (this.subscriptions.size > 0 || this._socket === null) return;
    this._setTimer("idle", () => {
      if (this.subscriptions.size > 0) return;
      this._dropSocket();
      this._setStatus(Status.IDLE);
    }, this.options.idleTimeout);
  }

  _ping() {
    if (this._awaitedPong !== null || !this._socket) return;
    this._pingId += 1;
    if (!this._send({ type: "ping", id: this._pingId })) return;
    this._awaitedPong = this._pingId;
    const socket = this._socket;
    this._setTimer("pong", () => this._lost(socket), this.options.pongTimeout);
  }

  // -- frames ---------------------------------------------------------------

  _send(frame) {
    if (this._socket === null || this._socket.readyState !== SOCKET_OPEN) return false;
    this._socket.send(JSON.stringify(frame));
    return true;
  }

  _sendSubscribe(sub) {
    const frame = { type: "subscribe", task_id: sub.taskId, token: sub.token ?? "" };
    // Resume from what we saw: the server replays the gap or answers with a reset snapshot.
    if (sub.epoch !== null && sub.seq > 0) Object.assign(frame, { since: sub.seq, epoch: sub.epoch });
    this._send(frame);
  }

  _onMessage(socket, message) {
    if (socket !== this._socket) return;
    let frame;
    try {
      frame = JSON.parse(message.data);
    } catch {
      return; // the server only sends JSON; ignore anything else rather than die
    }
    if (frame === null || typeof frame !== "object") return;
    if (!this._heard) {
      // Reset backoff only once the server answers, not on open: a server that
      // accepts and then fails at once must not be hammered.
      this._heard = true;
      this._attempt = 0;
    }
    const handler = FRAME_HANDLERS[frame.type];
    if (handler) handler.call(this, frame);
  }

  _frameForTask(frame) {
    const sub = this.subscriptions.get(frame.task_id);
    if (sub === undefined) return;
    if (frame.type !== "event") this._retries = 0;
    sub._receive(frame);
  }

  _onPong(frame) {
    if (frame.id !== this._awaitedPong) return;
    this._awaitedPong = null;
    this._clearTimer("pong");
  }

  _onCancelling(frame) {
    const waiter = this._takeCancel(frame.task_id);
    if (waiter) waiter.resolve(frame);
  }

  _onError(frame) {
    const sub = this.subscriptions.get(frame.task_id);
    const error = new TaskError(frame.detail || frame.code, { code: frame.code, taskId: frame.task_id });
    if (RETRY_LATER_ERRORS.has(frame.code)) {
      // Which frame was refused is not always said: resend every unanswered subscribe.
      this._retryUnsynced();
    } else if (sub && !sub.synced && FATAL_SUBSCRIBE_ERRORS.has(frame.code)) {
      // The server answers frames in order, so an error before the first snapshot
      // is the subscribe's own.
      sub._refused(error);
      return;
    } else if (frame.task_id !== undefined && this._cancels.has(frame.task_id)) {
      this._takeCancel(frame.task_id).reject(error);
      return;
    }
    const detail = { code: frame.code, detail: frame.detail, error };
    if (sub) sub._emit("error", detail);
    else this.dispatchEvent(new CustomEvent("error", { detail: { taskId: frame.task_id ?? null, ...detail } }));
  }

  _retryUnsynced() {
    const delay = backoffDelay(this._retries, this.options.minDelay, this.options.maxDelay);
    this._retries += 1;
    this._setTimer("resubscribe", () => {
      for (const sub of this.subscriptions.values()) if (!sub.synced) this._sendSubscribe(sub);
    }, delay);
  }

  _takeCancel(taskId, waiter = undefined) {
    const waiters = this._cancels.get(taskId) ?? [];
    const index = waiter === undefined ? 0 : waiters.indexOf(waiter);
    if (index < 0 || index >= waiters.length) return undefined;
    const [taken] = waiters.splice(index, 1);
    if (waiters.length === 0) this._cancels.delete(taskId);
    clearTimeout(taken.timer);
    return taken;
  }

  // -- small helpers ----------------------------------------------------------

  _setStatus(status, extra = {}) {
    if (status === this.status && status !== Status.RECONNECTING) return;
    this.status = status;
    this.dispatchEvent(new CustomEvent("connection", { detail: { status, ...extra } }));
  }

  _setTimer(name, callback, delay) {
    this._clearTimer(name);
    this._timers[name] = setTimeout(() => {
      delete this._timers[name];
      callback();
    }, delay);
  }

  _setInterval(name, callback, delay) {
    this._clearTimer(name);
    this._timers[name] = setInterval(callback, delay);
  }

  _clearTimer(name) {
    // clearTimeout and clearInterval share one id pool in browsers.
    clearTimeout(this._timers[name]);
    delete this._timers[name];
  }
}

/** Server frame type -> handler; frames of other types are ignored. */
const FRAME_HANDLERS = {
  snapshot: TaskPulseClient.prototype._frameForTask,
  event: TaskPulseClient.prototype._frameForTask,
  resumed: TaskPulseClient.prototype._frameForTask,
  pong: TaskPulseClient.prototype._onPong,
  cancelling: TaskPulseClient.prototype._onCancelling,
  error: TaskPulseClient.prototype._onError,
  unsubscribed: () => {},
};

let shared = null;

/** The page's one client, created on first use (options apply only then). */
export function sharedClient(options = {}) {
  if (shared === null) shared = new TaskPulseClient(options);
  return shared;
}
