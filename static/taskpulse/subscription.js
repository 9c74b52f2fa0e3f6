/**
 * One watched task: applies its snapshot, resumed and event frames in seq order,
 * keeps the latest task object (PROTOCOL.md §3) and tells listeners through
 * events and a promise. The client (client.js) owns the socket.
 */

export const FINAL_STATES = new Set(["SUCCESS", "FAILURE", "REVOKED", "LOST"]);

/** Not a record state: no frame yet, or the server has no record of the task. */
export const UNKNOWN = "UNKNOWN";

/** Why a task did not succeed: `code` is its final state or a protocol error code. */
export class TaskError extends Error {
  constructor(message, { code, taskId = null, task = null }) {
    super(message);
    this.name = "TaskError";
    this.code = code;
    this.taskId = taskId;
    this.task = task;
  }
}

/**
 * A promise with its resolve and reject, created once and marked handled: a
 * failed task that nobody awaits must not log an "unhandled rejection".
 */
export function settlement() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/**
 * Events (CustomEvent, `detail` always has `taskId`):
 * - `progress` {task, reset}: every applied snapshot or event
 * - `state` {task, state, previous}: the state changed
 * - `final` {task}: the task reached a final state; the subscription is over
 * - `error` {code, detail, error}: the server refused a frame about this task
 * The same events are re-dispatched on the client, for page-wide listeners.
 */
export class TaskSubscription extends EventTarget {
  constructor(client, taskId, token) {
    super();
    this.client = client;
    this.taskId = taskId;
    this.token = token || null;
    this.task = null; // the latest object, without the frame-only keys
    this.epoch = null;
    this.seq = 0;
    this.synced = false; // answered (snapshot or resumed) on the current socket
    this.ended = false; // final, or refused: the server no longer serves it
    this.users = 0; // subscribe() calls not yet released
    const { promise, resolve, reject } = settlement();
    /** Resolves with the final task object on SUCCESS; rejects with a TaskError otherwise. */
    this.done = promise;
    this._resolve = resolve;
    this._reject = reject;
  }

  get state() {
    return this.task?.state ?? UNKNOWN;
  }

  cancel() {
    return this.client.cancel(this.taskId, this.token ?? undefined);
  }

  /** Stop watching (once per subscribe() call); the last release unsubscribes. */
  unsubscribe() {
    this.client._release(this);
  }

  // -- called by the client -------------------------------------------------

  _receive(frame) {
    if (this.ended) return;
    if (frame.type === "resumed") {
      // The gap since our seq follows as events.
      this.synced = true;
      this.epoch = frame.epoch;
      this.seq = frame.seq;
      return;
    }
    if (frame.type === "snapshot") this.synced = true;
    else if (!this.synced) return; // an event before its snapshot is outside the contract
    if (!this._isStale(frame)) this._apply(frame);
  }

  _isStale(frame) {
    // The server promises increasing seqs; checking again costs nothing and
    // guarantees a replayed or duplicated frame never moves the bar backwards.
    if (frame.type === "snapshot" && frame.reset) return false; // a new truth, by definition
    return this.task !== null && frame.epoch === this.epoch && frame.seq <= this.seq;
  }

  _apply(frame) {
    const { type: _type, reset, ...task } = frame;
    const previous = this.state;
    this.task = task;
    this.epoch = task.epoch;
    this.seq = task.seq;
    this._emit("progress", { task, reset: Boolean(reset) });
    if (task.state !== previous) this._emit("state", { task, state: task.state, previous });
    if (task.final) this._finish(task);
  }

  _finish(task) {
    this.ended = true;
    this._emit("final", { task });
    if (task.state === "SUCCESS") {
      this._resolve(task);
    } else {
      const message = task.error?.message || `task ended in state ${task.state}`;
      this._reject(new TaskError(message, { code: task.state, taskId: this.taskId, task }));
    }
    this.client._ended(this);
  }

  /**
   * The server refused the subscribe itself (bad token or id), or the client
   * stopped for good (a final close code): it will never succeed.
   */
  _refused(error) {
    this.ended = true;
    this._emit("error", { code: error.code, detail: error.message, error });
    this._reject(error);
    this.client._ended(this);
  }

  _emit(type, detail) {
    const full = { taskId: this.taskId, ...detail };
    this.dispatchEvent(new CustomEvent(type, { detail: full }));
    this.client.dispatchEvent(new CustomEvent(type, { detail: full }));
  }
}
