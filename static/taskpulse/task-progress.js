/**
 * <task-progress task-id="…" token="…">: one task's live progress bar.
 * Every element on the page watches through the one shared client (client.js),
 * so any number of bars share a single WebSocket. Server data is only ever
 * written with textContent.
 */

import { sharedClient, FINAL_STATES, UNKNOWN } from "./client.js";
import { settlement } from "./subscription.js";

/** Words shown for each state; `data-state` carries the raw state for CSS and tests. */
export const STATE_LABELS = {
  UNKNOWN: "Waiting…",
  PENDING: "Queued",
  STARTED: "Started",
  PROGRESS: "Running",
  RETRY: "Retrying",
  SUCCESS: "Done",
  FAILURE: "Failed",
  REVOKED: "Cancelled",
  LOST: "Lost",
};

const MAX_RESULT_CHARS = 300; // a result may be 64 KiB: show its start, not a wall of text

/** Seconds in PENDING before the element suggests why no worker has reported the task. */
export const QUEUED_HINT_AFTER = 30;

// Where a newcomer finds each cause explained (the docs ship with the package).
const TROUBLESHOOTING = "See \"Troubleshooting\" in TaskPulse's docs/INTEGRATION.md.";

// taskpulse.css sets this on every <task-progress>; a page that styles the
// element without that file sets it too, to say the look is taken care of.
const STYLESHEET_MARKER = "--taskpulse-stylesheet";

export const STYLESHEET_MISSING =
  "TaskPulse's stylesheet (taskpulse/taskpulse.css) did not load, so this bar is unstyled: " +
  "check that your server serves it as text/css (the browser's console shows a 404 or a " +
  "refused MIME type). See \"Static files\" in TaskPulse's docs/INTEGRATION.md.";

/** A task still PENDING `seconds` after the element saw it queued. */
export function queuedHint(seconds) {
  return `Still queued after ${seconds} s. If a worker has taken this task, that worker may be ` +
    "running without TaskPulse (no \"progress\" app in its INSTALLED_APPS) or on another Redis " +
    "database or key prefix than this site (TASKPULSE_REDIS_URL, TASKPULSE_KEY_PREFIX); " +
    `otherwise no worker consumes its queue. ${TROUBLESHOOTING}`;
}

/**
 * Why the client stopped with connection_refused. A browser reports a 404 (no
 * WebSocket server at that address) exactly as a 403 (origin refused), so the
 * element names both, with the address it tried.
 */
export function refusedHint(url) {
  return `The server refused the connection to ${url}. Either nothing serves TaskPulse's ` +
    "WebSocket there (HTTP 404: a WSGI server such as gunicorn, runserver without \"daphne\" " +
    "in INSTALLED_APPS, or an asgi.py that does not route \"websocket\"), or this page's " +
    "origin is not in its allowed hosts (HTTP 403); the server's log tells which. " +
    `${TROUBLESHOOTING} Reload the page to try again.`;
}

let nextId = 0;

/** "45 s left", "3 min 5 s left", "2 h 4 min left". */
export function formatEta(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s left`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s left`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min left`;
}

function formatResult(result) {
  if (result === null || result === undefined) return "Done.";
  const text = JSON.stringify(result);
  return `Result: ${text.length > MAX_RESULT_CHARS ? `${text.slice(0, MAX_RESULT_CHARS)}…` : text}`;
}

function formatError(error, state) {
  if (!error) return STATE_LABELS[state] ?? state;
  return error.type ? `${error.type}: ${error.message ?? ""}` : String(error.message ?? "");
}

/** Settle `done` as the subscription's own promise settles (that one is created once, too). */
function followDone(done, subscription) {
  subscription.done.then(done.resolve, done.reject);
}

function part(tag, className, attributes = {}) {
  const node = document.createElement(tag);
  node.className = className;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

export class TaskProgressElement extends HTMLElement {
  static observedAttributes = ["task-id", "token", "cancellable", "label", "queued-hint-after"];

  constructor() {
    super();
    this._client = null; // resolved on first use: see `client`
    this._done = null; // {promise, resolve, reject, taskId}: see `done`
    this._subscription = null;
    this._listening = null; // AbortController for the current subscription's listeners
    this._parts = null;
    this._cancelling = false;
    this._queuedTimer = null; // shows the queued hint: see _followQueued
  }

  /** The latest task object (PROTOCOL.md §3), or null before the first frame. */
  get task() {
    return this._subscription?.task ?? null;
  }

  get state() {
    return this._subscription?.state ?? UNKNOWN;
  }

  /**
   * The client it watches through: the page's shared one unless another is set
   * before the element is added. Resolved when first needed (when the element
   * is added), not when it is constructed, so page scripts that run after this
   * module still get to configure() the shared client first.
   */
  get client() {
    // transport="auto" | "websocket" | "sse": the page's shared client's (client.js).
    const transport = this.getAttribute("transport");
    this._client ??= sharedClient(transport ? { transport } : undefined);
    return this._client;
  }

  set client(client) {
    this._client = client;
  }

  /**
   * Settles on the final state: resolves with the task on SUCCESS, else rejects.
   * One promise per task id, the same on every access, before or after the
   * element is added; a new task-id gets a new one. Without a task-id it is
   * rejected. Marked handled, so a rejection nobody awaits is not reported.
   */
  get done() {
    if (this._done?.taskId !== this.taskId) this._done = this._newDone();
    return this._done.promise;
  }

  _newDone() {
    const done = { ...settlement(), taskId: this.taskId };
    if (this.taskId === "") done.reject(new Error("no task-id to watch"));
    else if (this._subscription?.taskId === this.taskId) followDone(done, this._subscription);
    return done;
  }

  /** Cancel the task (needs a token with the cancel permission). */
  cancel() {
    return this.client.cancel(this.taskId, this.token);
  }

  get taskId() {
    return this.getAttribute("task-id") ?? "";
  }

  get token() {
    return this.getAttribute("token") ?? "";
  }

  /** Seconds in PENDING before the queued hint shows (queued-hint-after; 0: never). */
  get queuedHintAfter() {
    const value = Number.parseFloat(this.getAttribute("queued-hint-after") ?? "");
    return Number.isFinite(value) && value >= 0 ? value : QUEUED_HINT_AFTER;
  }

  /** Cancellable unless cancellable="false" or there is no token to cancel with. */
  get cancellable() {
    return this.token !== "" && this.getAttribute("cancellable") !== "false";
  }

  connectedCallback() {
    if (this._parts === null) this._build();
    this._watch();
  }

  disconnectedCallback() {
    this._unwatch();
    this._stopQueuedTimer();
  }

  attributeChangedCallback(name, oldValue, newValue) {
    if (oldValue === newValue || this._parts === null) return;
    if (name === "label") this._parts.name.textContent = this._label();
    if (name === "queued-hint-after") this._stopQueuedTimer(); // restarted with the new delay
    if ((name === "task-id" || name === "token") && this.isConnected) {
      this._unwatch();
      this._watch();
    }
    this._render();
  }

  _build() {
    const id = `taskpulse-${(nextId += 1)}`;
    const parts = {
      name: part("span", "taskpulse-name", { id: `${id}-name` }),
      state: part("span", "taskpulse-state"),
      bar: part("progress", "taskpulse-bar", {
        "aria-labelledby": `${id}-name`,
        "aria-describedby": `${id}-message`,
      }),
      percent: part("span", "taskpulse-percent"),
      eta: part("span", "taskpulse-eta"),
      message: part("p", "taskpulse-message", { id: `${id}-message`, "aria-live": "polite" }),
      outcome: part("p", "taskpulse-outcome", { "aria-live": "polite" }),
      hint: part("p", "taskpulse-hint", { "aria-live": "polite" }),
      warning: part("p", "taskpulse-warning"),
      cancel: part("button", "taskpulse-cancel", { type: "button" }),
    };
    parts.cancel.textContent = "Cancel";
    parts.cancel.hidden = true;
    parts.cancel.addEventListener("click", () => this._onCancelClick());
    const head = part("div", "taskpulse-head");
    head.append(parts.name, parts.state);
    const figures = part("div", "taskpulse-figures");
    figures.append(parts.percent, parts.eta);
    const foot = part("div", "taskpulse-foot");
    foot.append(parts.message, parts.cancel);
    // Replaces server-rendered fallback content ("Loading…" and its hint) with the live parts.
    this.replaceChildren(head, parts.bar, figures, foot, parts.outcome, parts.hint, parts.warning);
    this._parts = parts;
    parts.name.textContent = this._label();
    this._render();
    this._checkStylesheet();
  }

  /** Say so when the script runs but taskpulse.css never applied (404, wrong MIME type). */
  _checkStylesheet() {
    const check = () => {
      if (getComputedStyle(this).getPropertyValue(STYLESHEET_MARKER).trim() !== "") return;
      this.dataset.warning = "stylesheet";
      this._parts.warning.textContent = STYLESHEET_MISSING;
    };
    // Stylesheets still loading have not applied yet: judge once the page has loaded.
    if (document.readyState === "complete") check();
    else window.addEventListener("load", check, { once: true });
  }

  _label() {
    // The id's first characters tell apart several runs of one task.
    return this.getAttribute("label") || `${this.task?.name ?? "Task"} · ${this.taskId.slice(0, 8)}`;
  }

  _watch() {
    if (this.taskId === "" || this._subscription !== null) return;
    delete this.dataset.error;
    this._cancelling = false;
    const sub = this.client.subscribe(this.taskId, this.token);
    const listening = new AbortController();
    const { signal } = listening;
    for (const type of ["progress", "state", "final", "error"]) {
      sub.addEventListener(type, (event) => {
        if (type === "progress") this._showFrame();
        else if (type === "error") this._showError(event.detail);
        // Re-dispatch from the element, so page code can listen on it or on an ancestor.
        this.dispatchEvent(new CustomEvent(`taskpulse:${type}`, { detail: event.detail, bubbles: true }));
      }, { signal });
    }
    this._subscription = sub;
    this._listening = listening;
    if (this._done?.taskId === sub.taskId) followDone(this._done, sub);
    this._render();
  }

  _unwatch() {
    if (this._subscription === null) return;
    this._listening.abort();
    this._subscription.unsubscribe();
    this._subscription = null;
    this._listening = null;
  }

  async _onCancelClick() {
    if (this._cancelling) return;
    this._cancelling = true;
    this._render();
    try {
      await this.cancel(); // the REVOKED (or another final) event follows
    } catch (error) {
      this._cancelling = false;
      this._showError({ code: error.code, detail: error.message });
    }
  }

  _showFrame() {
    delete this.dataset.error; // news from the server: an earlier refusal is past
    this._render();
  }

  _showError({ code, detail }) {
    this.dataset.error = code ?? "error";
    this._render(); // a refusal may have ended the subscription: no cancel button then
    this._parts.outcome.textContent =
      code === "connection_refused" ? refusedHint(this.client.url) : detail || code;
  }

  /**
   * While the task is PENDING, start the clock for the queued hint; any other
   * state stops it and takes the hint away. A STARTED that never comes is all a
   * browser can see of a worker that records nothing.
   */
  _followQueued(state) {
    if (state !== "PENDING" || this._subscription === null || this._subscription.ended) {
      this._stopQueuedTimer();
      return;
    }
    const seconds = this.queuedHintAfter;
    if (this._queuedTimer !== null || seconds === 0 || this.dataset.hint === "queued") return;
    this._queuedTimer = setTimeout(() => {
      this._queuedTimer = null;
      this.dataset.hint = "queued";
      this._parts.hint.textContent = queuedHint(seconds);
    }, seconds * 1000);
  }

  _stopQueuedTimer() {
    clearTimeout(this._queuedTimer);
    this._queuedTimer = null;
    if (this.dataset.hint === undefined || this._parts === null) return;
    delete this.dataset.hint;
    this._parts.hint.textContent = "";
  }

  _render() {
    if (this._parts === null) return;
    const { bar, state: stateLabel, percent, eta, message, outcome, cancel, name } = this._parts;
    const task = this.task;
    const state = task?.state ?? UNKNOWN;
    const final = FINAL_STATES.has(state);
    const progress = task?.progress ?? {};

    this.dataset.state = state;
    this.toggleAttribute("data-final", final);
    this._followQueued(state);
    stateLabel.textContent = STATE_LABELS[state] ?? state;
    name.textContent = this._label();
    this._renderBar(bar, progress, state, final);
    percent.textContent = typeof progress.percent === "number" ? `${Math.floor(progress.percent)}%` : "";
    eta.textContent = !final && typeof task?.eta === "number" ? formatEta(task.eta) : "";
    message.textContent = progress.message ?? "";
    if (state === "SUCCESS") outcome.textContent = formatResult(task.result);
    else if (final) outcome.textContent = formatError(task.error, state);
    else if (this.dataset.error === undefined) outcome.textContent = "";

    // An ended subscription (final, refused, or the client stopped) cannot be cancelled through.
    const watching = this._subscription !== null && !this._subscription.ended;
    cancel.hidden = !this.cancellable || final || state === UNKNOWN || !watching;
    cancel.disabled = this._cancelling;
    cancel.textContent = this._cancelling ? "Cancelling…" : "Cancel";
  }

  _renderBar(bar, progress, state, final) {
    if (typeof progress.total === "number" && progress.total > 0) {
      bar.max = progress.total;
      bar.value = Math.min(progress.current ?? 0, progress.total);
    } else if (final) {
      // The total was never known, but the work is over: stop the indeterminate
      // animation, full on success and empty otherwise.
      bar.max = 1;
      bar.value = state === "SUCCESS" ? 1 : 0;
    } else {
      bar.removeAttribute("value"); // no value: the native indeterminate bar
      bar.removeAttribute("max");
    }
  }
}

if (!customElements.get("task-progress")) customElements.define("task-progress", TaskProgressElement);
