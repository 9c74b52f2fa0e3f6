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
  static observedAttributes = ["task-id", "token", "cancellable", "label"];

  constructor() {
    super();
    this._client = null; // resolved on first use: see `client`
    this._done = null; // {promise, resolve, reject, taskId}: see `done`
    this._subscription = null;
    this._listening = null; // AbortController for the current subscription's listeners
    this._parts = null;
    this._cancelling = false;
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
    this._client ??= sharedClient();
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
  }

  attributeChangedCallback(name, oldValue, newValue) {
    if (oldValue === newValue || this._parts === null) return;
    if (name === "label") this._parts.name.textContent = this._label();
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
    // Replaces server-rendered fallback content ("Loading…") with the live parts.
    this.replaceChildren(head, parts.bar, figures, foot, parts.outcome);
    this._parts = parts;
    parts.name.textContent = this._label();
    this._render();
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
    this._parts.outcome.textContent = detail || code;
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
