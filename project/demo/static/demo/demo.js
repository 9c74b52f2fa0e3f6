/**
 * The demo page (GET /): the start form POSTs to /api/tasks/ and each new task
 * gets a <task-progress> at the top of #tasks. All bars share the page's one
 * client, whose connection status is shown in #connection. When the site runs
 * several task systems, the form's "system" select names the demo task to start
 * (Celery's demo.count, or the same task on Django-Q2 or the tasks framework).
 */

import { sharedClient } from "../taskpulse/client.js";
import "../taskpulse/task-progress.js";

const START_URL = "/api/tasks/";
const DEMO_TASK = "demo.count";

/** Django's CSRF cookie, sent back in X-CSRFToken (the demo view sets it). */
function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/** The form's values as demo.count kwargs; an empty "fail at" means never fail. */
function demoKwargs(form) {
  const data = new FormData(form);
  const kwargs = { steps: Number(data.get("steps")), delay: Number(data.get("delay")) };
  if (String(data.get("fail_at") ?? "").trim() !== "") kwargs.fail_at = Number(data.get("fail_at"));
  return kwargs;
}

/** The demo task of the system chosen in the form (Celery's when there is no choice). */
function demoTask(form) {
  const choice = form.elements.namedItem("system");
  return choice && choice.value ? choice.value : DEMO_TASK;
}

async function startTask(task, kwargs) {
  const response = await fetch(START_URL, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify({ task, kwargs }),
    credentials: "same-origin",
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error?.detail ?? `the server answered ${response.status}`);
  }
  return body;
}

function showTask({ task_id: taskId, token }) {
  const element = document.createElement("task-progress");
  element.setAttribute("task-id", taskId);
  element.setAttribute("token", token);
  document.getElementById("tasks").prepend(element);
}

function showStartError(message) {
  const box = document.getElementById("start-error");
  box.textContent = message;
  box.hidden = message === "";
}

function followConnection() {
  const indicator = document.getElementById("connection");
  const text = document.getElementById("connection-text");
  const client = sharedClient();
  const show = ({ status, delay }) => {
    indicator.dataset.status = status;
    text.textContent = delay === undefined ? status : `${status} in ${(delay / 1000).toFixed(1)} s`;
  };
  client.addEventListener("connection", (event) => show(event.detail));
  show({ status: client.status });
}

function init() {
  followConnection();
  const form = document.getElementById("start-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      showTask(await startTask(demoTask(form), demoKwargs(form)));
      showStartError("");
    } catch (error) {
      showStartError(`Could not start the task: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  });
}

init();
