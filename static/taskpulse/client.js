/**
 * TaskPulse browser client: one WebSocket per page carrying every watched task
 * (PROTOCOL.md §4). It reconnects with backoff, resumes each task from the last
 * seq it saw, and finds dead connections with ping/pong. Close codes that
 * retrying cannot fix stop it with an error instead. When WebSocket handshakes
 * are refused, it falls back to Server-Sent Events (sse-socket.js; option
 * `transport`). No dependencies.
 */

import { TaskSubscription, TaskError } from "./subscription.js";
import { SseSocket, defaultSseUrl } from "./sse-socket.js";

export { TaskSubscription, TaskError, FINAL_STATES, UNKNOWN } from "./subscription.js";

/** What `client.status` and `connection` events report. */
export const Status = Object.freeze({
  IDLE: "idle", // nothing to watch, no socket
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting", // waiting out a backoff delay
  OFFLINE: "offline", // the browser says it is offline: wait for `online`
  FAILED: "failed", // retrying cannot help: stopped, `client.error` says why
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
  tryAgainLaterDelay: 30000, // after 4013/4029 (1013): wait this long plus up to as much again
  refusedHandshakes: 5, // this many handshakes in a row closed before opening: refused
  // "auto": WebSocket, and Server-Sent Events once handshakes are refused;
  // "websocket" or "sse": that one only.
  transport: "auto",
  sseUrl: null, // null: <meta name="taskpulse-sse-url">, else /api/events/
});

export const TRANSPORTS = Object.freeze(["auto", "websocket", "sse"]);

const SOCKET_OPEN = 1; // WebSocket.OPEN, without needing the global in tests

// Close codes the client tells apart (PROTOCOL.md §4). Revision 2 of the
// protocol closes with 4xxx codes, one meaning each; revision 1's 1003, 1008,
// 1009 and 1013 are still understood, so an older server keeps working. Every
// other code (1001 going away, 1011, 1012 service restart, a 1006 drop after
// the socket had opened) is a blip: reconnect with backoff.
const CLOSE_NORMAL = 1000;
const CLOSE_ABNORMAL = 1006; // no close frame: a network failure, or a refused handshake
const CLOSE_FLOODING = 4008; // kept sending after rate_limited
const CLOSE_MESSAGE_TOO_BIG = 4009; // a frame over the size limit
const CLOSE_SLOW_READER = 4010; // left frames unread too long: resume after a pause
const CLOSE_TRY_AGAIN_LATER = 4013; // the server is at capacity
const CLOSE_TOO_MANY_SOCKETS = 4029; // too many sockets from this address

const FLOODING = {
  code: "policy_violation",
  message: "The server closed the connection for a policy violation (too many messages).",
};
const MESSAGE_TOO_BIG = {
  code: "message_too_big",
  message: "The server closed the connection: a message was larger than it accepts.",
};
// The server closed us for what this page sent: the same page would be closed
// again, so reconnecting only loads the server. Stop and say why.
const FINAL_CLOSES = new Map([
  [CLOSE_FLOODING, FLOODING],
  [CLOSE_MESSAGE_TOO_BIG, MESSAGE_TOO_BIG],
  // Revision 1 (1008 also meant a slow reader or a socket cap: stopping is
  // what revision-1 clients did, and the safe reading of an ambiguous code).
  [1003, {
    code: "unsupported_data",
    message: "The server closed the connection: it cannot accept what this page sent.",
  }],
  [1008, FLOODING],
  [1009, MESSAGE_TOO_BIG],
]);
// "Come back later": a long wait (tryAgainLaterDelay plus jitter), then reconnect.
const LATER_CLOSES = new Set([CLOSE_TRY_AGAIN_LATER, CLOSE_TOO_MANY_SOCKETS, 1013]);
// A browser reports a refused handshake (HTTP 403: origin not allowed) only
// as a 1006 close before `open`, exactly like a server with no WebSocket
// endpoint at this address (HTTP 404) or one that is unreachable.
const HANDSHAKE_REFUSED = {
  code: "connection_refused",
  message: "The server refused the WebSocket connection: either this site's origin is not "
    + "in its allowed hosts, or no WebSocket server answers at this address (runserver "
    + "without daphne, or a proxy that does not pass WebSocket upgrades). See "
    + "Troubleshooting in TaskPulse's docs/INTEGRATION.md.",
};
const RELOAD_HINT = "Reload the page to try again.";

// A refused subscribe that retrying with the same token cannot fix.
const FATAL_SUBSCRIBE_ERRORS = new Set(["forbidden", "bad_task_id", "bad_frame"]);
// "Not now": the subscribe is sent again after a backoff delay.
const RETRY_LATER_ERRORS = new Set(["too_many_subscriptions", "rate_limited", "unavailable"]);

/** Exponential backoff with full jitter: a random delay in [0, min(max, min * 2^attempt)). */
export function backoffDelay(attempt, minDelay, maxDelay, random = Math.random) {
  const cap = Math.min(maxDelay, minDelay * 2 ** attempt);
  return Math.floor(random() * cap);
}

/** After 4013/4029: at least `base`, plus up to `base` of jitter so a crowd of clients spreads out. */
export function tryAgainLaterDelay(base, random = Math.random) {
  return base + Math.floor(random() * base);
}

/** Why the client stopped: a TaskError (taskId null: it concerns the connection). */
function connectionError({ code, message }, reason) {
  // The reason is server text: the element shows it with textContent only.
  const because = reason ? ` (${reason})` : "";
  return new TaskError(`${message}${because} ${RELOAD_HINT}`, { code });
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
    this.sseUrl = this.options.sseUrl ?? defaultSseUrl();
    /** What carries the frames now: "websocket" or "sse". */
    this.transport = this.options.transport === "sse" ? "sse" : "websocket";
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
    this._everOpened = false; // has any socket to this url opened?
    this._refusals = 0; // sockets in a row closed before opening
    this._pageListeners = null; // AbortController of the window/document listeners
    this._pingEvery = null; // the interval the ping timer runs with
    /** Why the client stopped (status `failed`): a TaskError, else null. */
    this.error = null;
  }

  /**
   * Change options. Only the url needs a new socket: when it changed and the
   * client is connected or waiting to reconnect, it reconnects at once (tasks
   * resume from their last seq). A new pingInterval restarts the ping timer;
   * other options apply from their next use.
   */
  configure(options = {}) {
    const previous = [this.url, this.sseUrl, this.transport];
    this.options = { ...this.options, ...options };
    this.url = this.options.url ?? defaultUrl();
    this.sseUrl = this.options.sseUrl ?? defaultSseUrl();
    if (options.transport !== undefined) {
      this.transport = this.options.transport === "sse" ? "sse" : "websocket";
    }
    if (this.options.pingInterval !== this._pingEvery && this._timers.ping !== undefined) {
      this._startPinging();
    }
    if ([this.url, this.sseUrl, this.transport].every((value, i) => value === previous[i])) return;
    this._everOpened = false; // another server: its refusals are counted afresh
    this._refusals = 0;
    if (this._socket !== null || this.status === Status.RECONNECTING) this._restart();
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
    this._listenToPage();
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

  /** Close the socket and stop reconnecting; subscriptions and page listeners are dropped. */
  close() {
    for (const sub of this.subscriptions.values()) sub.users = 0;
    this.subscriptions.clear();
    this._dropSocket();
    this._clearTimer("reconnect");
    this._stopListeningToPage();
    this.error = null;
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
    // A new subscribe after a failure is a new request from the page: try again.
    if (this.status === Status.FAILED) this._forgetFailure();
    if (this._socket === null && this.status !== Status.RECONNECTING) this._connect();
  }

  _forgetFailure() {
    this.error = null;
    this._attempt = 0;
    this._refusals = 0;
  }

  /** Added on first subscribe, removed by close(): a closed client leaves nothing behind. */
  _listenToPage() {
    if (this._pageListeners !== null) return;
    this._pageListeners = new AbortController();
    const { signal } = this._pageListeners;
    window.addEventListener("online", () => this._onOnline(), { signal });
    // Going offline, or a laptop waking up, may have killed the socket without
    // a close event: probe it now rather than at the next ping.
    window.addEventListener("offline", () => this._ping(), { signal });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this._ping();
    }, { signal });
  }

  _stopListeningToPage() {
    this._pageListeners?.abort();
    this._pageListeners = null;
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
    const socket = this.transport === "sse" ? new SseSocket(this.sseUrl) : new WebSocket(this.url);
    this._socket = socket;
    // A hang is not a refusal: it is retried like a drop, however often.
    this._setTimer("connect", () => this._lost(socket), this.options.connectTimeout);
    socket.onopen = () => this._onOpen(socket);
    socket.onmessage = (event) => this._onMessage(socket, event);
    socket.onclose = (event) => this._onClose(socket, event);
  }

  _onOpen(socket) {
    if (socket !== this._socket) return;
    this._clearTimer("connect");
    this._everOpened = true;
    this._refusals = 0;
    this._setStatus(Status.OPEN);
    for (const sub of this.subscriptions.values()) this._sendSubscribe(sub);
    this._startPinging();
    this._idleIfUnused();
  }

  _startPinging() {
    this._pingEvery = this.options.pingInterval;
    this._setInterval("ping", () => this._ping(), this._pingEvery);
  }

  /** The server (or the browser, for a failed handshake) closed the socket: why? */
  _onClose(socket, { code, reason, refused = false } = {}) {
    if (socket !== this._socket) return;
    const final = FINAL_CLOSES.get(code);
    if (final !== undefined) {
      this._fail(connectionError(final, reason), code);
    } else if (LATER_CLOSES.has(code)) {
      // The server asked for it: a much longer wait than a blip's backoff.
      this._lost(socket, tryAgainLaterDelay(this.options.tryAgainLaterDelay));
    } else if (code === CLOSE_SLOW_READER) {
      // This page fell behind (a busy tab, a slow link): resume after a pause
      // of at least minDelay, growing like any other reconnect.
      this._lost(socket, this.options.minDelay
        + backoffDelay(this._attempt, this.options.minDelay, this.options.maxDelay));
    } else if (refused || this._refusedTooOften(code)) {
      // `refused`: the Server-Sent Events fallback was refused too (sse-socket.js).
      if (!refused && this._fallBackToSse(socket)) return;
      this._fail(connectionError(HANDSHAKE_REFUSED, reason), code);
    } else {
      this._lost(socket);
    }
  }

  /**
   * One 1006 before `open` may be a network blip, so it is retried. Only a
   * client that has never opened a socket to this server, and saw this many
   * handshakes in a row fail, concludes it is refused: a server that
   * restarts after serving us looks the same for a while and must be waited for.
   */
  _refusedTooOften(code) {
    if (this._everOpened || code !== CLOSE_ABNORMAL) return false;
    this._refusals += 1;
    return this._refusals >= this.options.refusedHandshakes;
  }

  /** WebSockets are refused: carry on over Server-Sent Events, unless told not to. */
  _fallBackToSse(socket) {
    if (this.options.transport !== "auto" || this.transport === "sse") return false;
    this.transport = "sse";
    this._refusals = 0;
    this._attempt = 0;
    this._lost(socket, 0);
    return true;
  }

  /** The socket closed, timed out or stopped answering: forget it and plan the next try. */
  _lost(socket, delay = undefined) {
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
    const wait = delay ?? backoffDelay(this._attempt, this.options.minDelay, this.options.maxDelay);
    this._attempt += 1;
    this._setStatus(Status.RECONNECTING, { delay: wait, attempt: this._attempt });
    this._setTimer("reconnect", () => this._connect(), wait);
  }

  /** Retrying cannot help: stop, and end every subscription with the reason. */
  _fail(error, closeCode) {
    this._dropSocket();
    this._clearTimer("reconnect");
    this.error = error;
    const ended = [...this.subscriptions.values()];
    this.subscriptions.clear();
    // Status first, so listeners of the subscriptions' errors see it.
    this._setStatus(Status.FAILED, { error, closeCode });
    for (const sub of ended) sub._refused(error);
    this.dispatchEvent(new CustomEvent("error", {
      detail: { taskId: null, code: error.code, detail: error.message, error },
    }));
  }

  /** Drop the socket and connect again at once (the url changed). */
  _restart() {
    this._dropSocket();
    this._clearTimer("reconnect");
    this._attempt = 0;
    if (this.subscriptions.size === 0) this._setStatus(Status.IDLE);
    else this._connect();
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
    this._refusals = 0; // the failures so far may have been this outage
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
let sharedOptions = {};

/**
 * Options of the page's shared client, whether it exists yet or not: before,
 * they are used when it is created; after, they are applied to it at once
 * (TaskPulseClient.configure). So the order in which the page's scripts and
 * the <task-progress> element load does not matter.
 */
export function configure(options = {}) {
  sharedOptions = { ...sharedOptions, ...options };
  if (shared !== null) shared.configure(options);
}

/** The page's one client, created on first use; `options`, if given, go through configure(). */
export function sharedClient(options = undefined) {
  if (options !== undefined) configure(options);
  if (shared === null) shared = new TaskPulseClient(sharedOptions);
  return shared;
}
