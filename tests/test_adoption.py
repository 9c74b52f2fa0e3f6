"""Adoption: TaskPulse used the way a new user uses it, from nothing.

A wheel is built from this checkout and installed (with its `celery` extra)
in a fresh virtualenv; `django-admin startproject mysite` makes a site with a
Celery app as Celery's own "First steps with Django" guide shows it; the code
blocks of docs/INTEGRATION.md marked `<!-- adoption: NAME -->` are applied to
it exactly as printed there (read from the doc, so doc and test cannot
drift); the site's own app (tests/adoption/jobs) has the tasks a host writes.
Then real processes, all from the new virtualenv and the site's directory:

- embedded: stock `daphne mysite.asgi:application` and `celery -A mysite
  worker`, with the broker on Redis, and again on RabbitMQ with `rpc://`
  results (skipped, saying why, when RabbitMQ does not answer);
- status server: the host site under gunicorn (WSGI: it serves no
  WebSocket) and its worker, and TaskPulse as a separate service, both this
  repository's `project/` and the doc's own-settings service (under the tuned
  launcher and under stock daphne), sharing only Redis and TASKPULSE_TOKEN_KEY
  (each side has its own SECRET_KEY).

In both, headless Chromium opens the page of the doc's step 6 (its app, task,
view, template and route, static files served as its step 5 says) and sees the
bar move to "Done"; and a page whose task runs on a worker without the
`progress` app says so after 30 s at "Queued".

Every run has its own Redis key prefix and Celery queue (and RabbitMQ
queue), deleted afterwards; every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import websockets
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests import processes
from tests.browser.conftest import ACTION_TIMEOUT_MS, chromium
from tests.client import Http, Ws, connect
from tests.fresh_site import build_wheel, clean_env, run
from tests.processes import AMQP_URL, amqp_reachable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = processes.ROOT
DOC = ROOT / "docs" / "INTEGRATION.md"
HOST_APP = ROOT / "tests" / "adoption" / "jobs"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
WATCH_TIMEOUT = 45.0  # from subscribing to every watched task's final frame

# The doc's code blocks, by the name in their `<!-- adoption: NAME -->` marker.
CELERY_APP = "mysite/celery.py"
CELERY_INIT = "mysite/__init__.py"
CELERY_SETTINGS = "mysite/settings.py (Celery)"
EMBEDDED_SETTINGS = "mysite/settings.py (embedded)"
STATUS_SETTINGS = "mysite/settings.py (status server)"
STATIC_SETTINGS = "mysite/settings.py (static)"
ASGI = "mysite/asgi.py"
URLS = "mysite/urls.py"
# Step 6: the page that shows a bar, in the app `imports`.
IMPORTS_SETTINGS = "mysite/settings.py (imports)"
TUTORIAL_TASKS = "imports/tasks.py"
IMPORTS_VIEWS = "imports/views.py"
PAGE = "imports/templates/imports/started.html"
STATUS_PAGE = "imports/templates/imports/started.html (status server)"
IMPORTS_URLS = "mysite/urls.py (imports)"
PAGE_PATH = "/imports/start/"
# The status-server page's placeholder for the service's address.
SERVICE_URL_IN_DOC = "wss://progress.example.com/ws/progress/"
SERVICE_FILES = ("taskpulse_server/settings.py", "taskpulse_server/urls.py",
                 "taskpulse_server/asgi.py")
BLOCK_NAMES = {CELERY_APP, CELERY_INIT, CELERY_SETTINGS, EMBEDDED_SETTINGS, STATUS_SETTINGS,
               STATIC_SETTINGS, ASGI, URLS, IMPORTS_SETTINGS, TUTORIAL_TASKS, IMPORTS_VIEWS,
               PAGE, STATUS_PAGE, IMPORTS_URLS, *SERVICE_FILES}
# The commands of the numbered steps this test runs (as argv, in a venv and a site).
DOC_COMMANDS = ('pip install "taskpulse[celery]" whitenoise',
                "python manage.py startapp imports",
                "python manage.py collectstatic --noinput",
                "daphne -p 8000 mysite.asgi:application",
                "gunicorn -b 127.0.0.1:8000 mysite.wsgi:application",
                "daphne -p 8001 taskpulse_server.asgi:application")
HOST_EXTRA_PACKAGES = ("whitenoise", "gunicorn")  # the doc's pip line; the WSGI server
PAGE_TIMEOUT_MS = 60_000  # from opening the page to the bar's "Done" (500 rows, 20 ms each)

BLOCK = re.compile(
    r"^(?P<indent>[ ]*)<!-- adoption: (?P<name>[^>]+?) -->\n"
    r"(?P=indent)```[a-z]*\n(?P<body>.*?)^(?P=indent)```[ ]*$",
    re.MULTILINE | re.DOTALL)
ELEMENT = re.compile(r'<task-progress task-id="(?P<task_id>[^"]+)" token="(?P<token>[^"]+)"')


def doc_blocks() -> dict[str, str]:
    """docs/INTEGRATION.md's marked code blocks, unindented, by name."""
    blocks: dict[str, str] = {}
    for match in BLOCK.finditer(DOC.read_text()):
        indent = match["indent"]
        lines = match["body"].splitlines()
        assert all(line.startswith(indent) or not line.strip() for line in lines), match["name"]
        assert match["name"] not in blocks, f"two blocks named {match['name']!r}"
        blocks[match["name"]] = "\n".join(line[len(indent):] for line in lines) + "\n"
    return blocks


# -- processes ------------------------------------------------------------------




def delete_amqp_queue(url: str, name: str) -> None:
    """The run's queue and its exchange (Celery names both after the default queue)."""
    from kombu import Connection, Exchange, Queue

    with Connection(url, connect_timeout=5) as conn:
        Queue(name).bind(conn.default_channel).delete()
        Exchange(name).bind(conn.default_channel).delete()


def delete_redis_data(client: redis.Redis, prefix: str, task_ids: list[str]) -> None:
    """TaskPulse's keys, the Celery queue and bindings named after `prefix`, and the
    Celery results of the tasks this run started."""
    processes.delete_prefixed(client, prefix)
    for task_id in task_ids:
        client.delete(f"celery-task-meta-{task_id}")
    for key in client.scan_iter(match="_kombu.binding.*"):
        if client.type(key) == b"set":
            for member in client.smembers(key):
                if prefix.encode() in member:
                    client.srem(key, member)


# -- the wheel, the virtualenv, the site -------------------------------------------


@dataclass(frozen=True)
class Venv:
    path: Path

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def exe(self, name: str) -> str:
        return str(self.bin / name)

    @property
    def python(self) -> str:
        return self.exe("python")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheel of this checkout, built as a user builds it (pip, isolated build)."""
    source = tmp_path_factory.mktemp("source") / "taskpulse"
    out = tmp_path_factory.mktemp("wheelhouse")
    try:
        yield build_wheel(source, out)
    finally:
        shutil.rmtree(source.parent, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def host_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    """A fresh virtualenv with `taskpulse[celery]` installed from the wheel (pip's cache
    makes the dependencies quick); one per test session, deleted after it."""
    venv = Venv(tmp_path_factory.mktemp("venv") / "env")
    try:
        run([sys.executable, "-m", "venv", str(venv.path)], cwd=venv.path.parent,
            env=clean_env())
        run([venv.python, "-m", "pip", "install", "--quiet", f"{wheel}[celery]",
             *HOST_EXTRA_PACKAGES], cwd=venv.path.parent, env=clean_env(venv.bin))
        yield venv
    finally:
        shutil.rmtree(venv.path.parent, ignore_errors=True)


def settings_block(values: dict[str, object]) -> str:
    """What the test adds after the doc's settings: the site's own apps, and this run's
    private Redis prefix, queue and broker (all literal values)."""
    lines = ["# tests/test_adoption.py: the test's own app; this run's Redis prefix,",
             "# Celery queue and broker.",
             'INSTALLED_APPS += ["jobs"]']
    lines += [f"{name} = {value!r}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def make_site(venv: Venv, parent: Path, mode: str, values: dict[str, object],
              service_ws: str = "") -> Path:
    """`django-admin startproject mysite`, then docs/INTEGRATION.md's steps for `mode`
    ("embedded" or "status server": its page points at `service_ws`), then the test's
    app `jobs`; the site's directory."""
    blocks = doc_blocks()
    site = parent / "site"
    site.mkdir()
    run([venv.exe("django-admin"), "startproject", "mysite", str(site)], cwd=parent,
        env=clean_env(venv.bin))
    # Step 6's app, made before the settings need the environment of the status server.
    run([venv.python, "manage.py", "startapp", "imports"], cwd=site, env=clean_env(venv.bin))
    package = site / "mysite"
    # Celery's "First steps with Django": the app and its import in __init__.py.
    (package / "celery.py").write_text(blocks[CELERY_APP])
    (package / "__init__.py").write_text(blocks[CELERY_INIT])
    settings = package / "settings.py"
    mode_block = EMBEDDED_SETTINGS if mode == "embedded" else STATUS_SETTINGS
    added = [blocks[CELERY_SETTINGS], blocks[mode_block], blocks[STATIC_SETTINGS],
             blocks[IMPORTS_SETTINGS], settings_block(values)]
    settings.write_text(settings.read_text() + "\n\n" + "\n\n".join(added))
    if mode == "embedded":
        (package / "asgi.py").write_text(blocks[ASGI])
        (package / "urls.py").write_text(blocks[URLS])
    page = blocks[PAGE] if mode == "embedded" else blocks[STATUS_PAGE].replace(
        SERVICE_URL_IN_DOC, service_ws)
    template = site / "imports" / "templates" / "imports" / "started.html"
    template.parent.mkdir(parents=True)
    template.write_text(page)
    (site / "imports" / "tasks.py").write_text(blocks[TUTORIAL_TASKS])
    (site / "imports" / "views.py").write_text(blocks[IMPORTS_VIEWS])
    with (package / "urls.py").open("a") as urls:
        urls.write("\n" + blocks[IMPORTS_URLS])
    with (package / "urls.py").open("a") as urls:
        urls.write("\n# tests/test_adoption.py: the site's own views.\n"
                   "from django.urls import include, path  # noqa: E402\n\n"
                   'urlpatterns += [path("jobs/", include("jobs.urls"))]\n')
    for source in HOST_APP.rglob("*"):
        if source.is_file():
            target = site / "jobs" / source.relative_to(HOST_APP)
            target = target.with_name(target.name.removesuffix("-tpl"))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return site


def worker_proc(venv: Venv, site: Path, env: dict[str, str], prefix: str) -> processes.Proc:
    argv = [venv.exe("celery"), "-A", "mysite", "worker", "--pool", "solo", "-l", "info",
            "-n", f"{prefix}-w@%h", "--without-mingle", "--without-gossip"]
    return processes.Proc(f"worker:{prefix}", argv, env, ready_marker=" ready.", cwd=site)


@dataclass
class Running:
    """A host site with its web process and worker running."""

    site: Path
    venv: Venv
    env: dict[str, str]
    prefix: str
    port: int
    web: processes.Proc
    worker: processes.Proc
    task_ids: list[str] = field(default_factory=list)
    broker: str = "redis"

    @property
    def base(self) -> str:
        return processes.http_url(self.port)

    @property
    def ws(self) -> str:
        return processes.ws_url(self.port)

    def http(self) -> Http:
        return Http(self.base)

    def start(self, kind: str, **params: object) -> tuple[str, str]:
        """Start one of the host's tasks through its own view: (task id, token)."""
        status, body = self.http().request(
            "GET", f"/jobs/start/{kind}/?{urllib.parse.urlencode(params)}")
        assert status == 200, (status, body, self.web.output())
        self.task_ids.append(body["task_id"])
        return str(body["task_id"]), str(body["token"])

    def page(self, kind: str, host: str = "127.0.0.1", **params: object) -> tuple[str, str, str]:
        """Render the host's page for a new task: (html, task id, token of its element)."""
        status, body = Http(f"http://{host}:{self.port}").request(
            "GET", f"/jobs/page/{kind}/?{urllib.parse.urlencode(params)}")
        html = body.decode() if isinstance(body, bytes) else str(body)
        assert status == 200, (status, html[:2000])
        element = ELEMENT.search(html)
        assert element, html
        self.task_ids.append(element["task_id"])
        return html, element["task_id"], element["token"]

    def manage(self, *args: str, **env: str) -> str:
        return run([self.venv.python, "manage.py", *args], cwd=self.site,
                   env={**self.env, **env})

    def stop(self) -> None:
        self.web.stop()
        self.worker.stop()


def start_running(running: Running, ready_path: str) -> None:
    """Collect the static files (step 5), start the worker and the web process; return
    once both are ready."""
    running.manage("collectstatic", "--noinput")
    running.worker.start()
    running.web.start()
    running.worker.wait_marker()
    processes.wait_http_ok(f"{running.base}{ready_path}", proc=running.web)


# -- watching over a WebSocket ----------------------------------------------------


async def watch(ws: Ws, tasks: dict[str, str],
                timeout: float = WATCH_TIMEOUT) -> dict[str, list[dict[str, Any]]]:
    """Subscribe to every task (id -> token); each one's frames up to its final one."""
    frames: dict[str, list[dict[str, Any]]] = {task_id: [] for task_id in tasks}
    for task_id, token in tasks.items():
        await ws.subscribe(task_id, token)
    pending = set(tasks)
    async with asyncio.timeout(timeout):
        while pending:
            frame = await ws.recv(timeout)
            about = frame.get("task_id")
            if about in frames:
                frames[about].append(frame)
                assert frame["type"] != "error", frame
                if frame.get("final"):
                    pending.discard(about)
    return frames


def check_stream(frames: list[dict[str, Any]], final_state: str) -> dict[str, Any]:
    """PROTOCOL.md §4: a snapshot, then events with contiguous seqs in one epoch, ending
    in the final state. The final frame."""
    assert frames, "no frame"
    assert frames[0]["type"] == "snapshot", frames[0]
    assert [f["type"] for f in frames[1:]] == ["event"] * (len(frames) - 1), frames
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert len({f["epoch"] for f in frames}) == 1, frames
    final = frames[-1]
    assert final["final"] is True and final["state"] == final_state, final
    assert not any(f["final"] for f in frames[:-1]), frames
    return final


def progress_events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f["progress"] for f in frames if f["type"] == "event" and f["state"] == "PROGRESS"]


def check_progress(frames: list[dict[str, Any]], total: int) -> list[dict[str, Any]]:
    """PROGRESS events arrived live, counting up to `total` of `total`."""
    events = progress_events(frames)
    assert events, f"no PROGRESS event: {frames}"
    currents = [p["current"] for p in events]
    assert currents == sorted(currents) and currents[-1] == total, events
    assert all(p["total"] == total for p in events), events
    assert events[-1]["percent"] == 100.0, events
    return events


# -- the page of step 6 in a browser -------------------------------------------------

# The bar part-way: a value above 0 and below its max (the native <progress>).
BAR_MOVING = """() => {
  const bar = document.querySelector("task-progress progress.taskpulse-bar");
  return bar !== null && bar.hasAttribute("value") && bar.value > 0 && bar.value < bar.max;
}"""


def see_the_bar_move(running: Running, host: str = "127.0.0.1") -> None:
    """Open the page of the doc's step 6 in headless Chromium: the element upgrades,
    styled, the bar stands part-way, then full at "Done"; nothing went wrong."""
    with chromium() as browser:
        context = browser.new_context(base_url=f"http://{host}:{running.port}")
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            page.goto(PAGE_PATH)
            element = page.locator("task-progress")
            task_id = element.get_attribute("task-id")
            assert task_id, page.content()
            running.task_ids.append(task_id)
            upgraded = page.locator("task-progress progress.taskpulse-bar")
            try:
                upgraded.wait_for(timeout=ACTION_TIMEOUT_MS)
            except PlaywrightTimeout:
                pytest.fail(f"the element never ran; the page says: {element.inner_text()}")
            page.wait_for_function(BAR_MOVING, timeout=PAGE_TIMEOUT_MS)
            page.locator('task-progress[data-state="SUCCESS"]').wait_for(
                timeout=PAGE_TIMEOUT_MS)
            bar = element.locator("progress")
            assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("500", "500")
            assert element.locator(".taskpulse-state").inner_text() == "Done"
            assert element.evaluate("e => getComputedStyle(e).display") == "block"  # styled
            for warned in ("data-error", "data-warning", "data-hint"):
                assert element.get_attribute(warned) is None, element.inner_text()
            assert errors == []
        finally:
            context.close()


# -- the wheel ---------------------------------------------------------------------


def test_doc_blocks_are_complete_python() -> None:
    """docs/INTEGRATION.md has every block and command this test applies, each Python
    block valid Python."""
    blocks = doc_blocks()
    assert set(blocks) == BLOCK_NAMES, sorted(blocks)
    for name, code in blocks.items():
        if name.split(" ")[0].endswith(".py"):
            compile(code, f"docs/INTEGRATION.md: {name}", "exec")
    text = DOC.read_text()
    for command in DOC_COMMANDS:
        assert command in text, f"docs/INTEGRATION.md no longer says {command!r}"
    assert SERVICE_URL_IN_DOC in blocks[STATUS_PAGE]


def test_wheel_installs_the_app_and_nothing_named_project(host_venv: Venv,
                                                          tmp_path: Path) -> None:
    """The installed distribution: progress (templates, tags, static files, py.typed)
    and consumers; no `project`, `tests` or `bench`."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(run([host_venv.python, "-c", code], cwd=tmp_path,
                       env=clean_env(host_venv.bin)).strip())
    assert purelib != Path(sysconfig.get_paths()["purelib"])
    for name in ("project", "tests", "bench"):
        assert not (purelib / name).exists(), f"{name} is installed in {purelib}"
    for path in ("progress/py.typed", "consumers/py.typed", "consumers/serve.py",
                 "progress/urls.py", "progress/templatetags/taskpulse.py",
                 "progress/templates/progress/task_progress.html",
                 "progress/static/taskpulse/task-progress.js",
                 "progress/static/taskpulse/client.js",
                 "progress/static/taskpulse/taskpulse.css"):
        assert (purelib / path).is_file(), f"{path} is not installed"
    found = run([host_venv.python, "-c",
                 "import importlib.util as u; print(u.find_spec('project'))"],
                cwd=tmp_path, env=clean_env(host_venv.bin))
    assert found.strip() == "None"


# -- embedded: the host site serves the WebSocket under stock daphne --------------


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def embedded(request: pytest.FixtureRequest, host_venv: Venv,
             tmp_path_factory: pytest.TempPathFactory,
             redis_client: redis.Redis) -> Iterator[Running]:
    """The embedded site under stock daphne and its Celery worker: the broker on Redis
    (results in Redis), or on RabbitMQ with `rpc://` results."""
    broker = str(request.param)
    if broker == "rabbitmq" and not amqp_reachable(AMQP_URL):
        pytest.skip(f"RabbitMQ is not reachable at {AMQP_URL} (set TEST_AMQP_URL to test "
                    "the embedded site with an AMQP broker and rpc:// results)")
    prefix = f"tpadopt{secrets.token_hex(3)}"
    values: dict[str, object] = {
        "TASKPULSE_REDIS_URL": REDIS_URL,
        "TASKPULSE_KEY_PREFIX": prefix,
        "CELERY_TASK_DEFAULT_QUEUE": prefix,
        "CELERY_BROKER_URL": REDIS_URL if broker == "redis" else AMQP_URL,
        "CELERY_RESULT_BACKEND": REDIS_URL if broker == "redis" else "rpc://",
    }
    site = make_site(host_venv, tmp_path_factory.mktemp(f"embedded-{broker}"), "embedded",
                     values)
    env = clean_env(host_venv.bin)
    port = processes.free_port()
    web = processes.Proc(f"daphne:{port}", [host_venv.exe("daphne"), "-b", "127.0.0.1", "-p",
                                      str(port), "mysite.asgi:application"], env, cwd=site)
    running = Running(site, host_venv, env, prefix, port, web,
                      worker_proc(host_venv, site, env, prefix), broker=broker)
    try:
        start_running(running, "/progress/healthz")
        yield running
    finally:
        running.stop()
        delete_redis_data(redis_client, prefix, running.task_ids)
        if broker == "rabbitmq":
            delete_amqp_queue(AMQP_URL, prefix)


async def test_embedded_tasks_stream_to_their_final_states(embedded: Running) -> None:
    """(a) update_state(PROGRESS) only, (b) track(self), (c) a task that raises, and the
    doc's own tutorial task: each streamed live over one WebSocket to its final state."""
    tutorial = embedded.start("tutorial", steps=5, delay=0.2)
    tracked = embedded.start("tracked", steps=5, delay=0.2)
    failing = embedded.start("failing", steps=5, delay=0.2, fail_at=3)
    doc = embedded.start("doc", steps=50)
    async with connect(embedded.ws) as conn:
        frames = await watch(Ws(conn), dict([tutorial, tracked, failing, doc]))

    final = check_stream(frames[tutorial[0]], "SUCCESS")
    assert final["result"] == {"steps": 5}
    check_progress(frames[tutorial[0]], total=5)

    final = check_stream(frames[tracked[0]], "SUCCESS")
    assert final["result"] == {"steps": 5}
    assert check_progress(frames[tracked[0]], total=5)[-1]["message"] == "step 5 of 5"

    final = check_stream(frames[failing[0]], "FAILURE")
    assert final["error"]["type"] == "ValueError", final
    assert final["error"]["message"] == "failed at step 3", final
    assert final["result"] is None

    final = check_stream(frames[doc[0]], "SUCCESS")
    assert final["result"] == {"rows": 50}
    assert (final["progress"]["current"], final["progress"]["total"]) == (50, 50), final


def test_embedded_http_api_under_the_host_prefix(embedded: Running) -> None:
    """/progress/tasks/<id>/ answers with a token (?token= or Bearer) and refuses
    without; /progress/healthz; nothing is startable over HTTP, the demo task least."""
    task_id, token = embedded.start("tracked", steps=2, delay=0.05)
    _other_id, other_token = embedded.start("tracked", steps=1, delay=0)
    http = embedded.http()
    path = f"/progress/tasks/{task_id}/"
    deadline = time.monotonic() + WATCH_TIMEOUT
    while True:  # polled here only to reach the final state; browsers are pushed to
        status, body = http.request("GET", f"{path}?token={token}")
        assert status == 200, body
        if body["final"]:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    assert body["task_id"] == task_id and body["state"] == "SUCCESS", body
    assert body["result"] == {"steps": 2}

    status, by_header = http.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and by_header == body
    status, refused = http.request("GET", path)
    assert status == 403 and refused["error"]["code"] == "forbidden", refused
    status, refused = http.request("GET", f"{path}?token={other_token}")
    assert status == 403 and refused["error"]["code"] == "forbidden", refused
    status, unmounted = http.request("GET", f"/api/tasks/{task_id}/?token={token}")
    assert status == 404, unmounted

    status, health = http.request("GET", "/progress/healthz")
    assert status == 200 and health["status"] == "ok", health

    http.request("GET", "/jobs/ping/")  # the CSRF cookie, as a page of the site sets it
    headers = {"Content-Type": "application/json", "X-CSRFToken": http.csrf()}
    for name in ("demo.count", "jobs.tasks.tutorial"):
        status, started = http.request("POST", "/progress/tasks/",
                                       {"task": name, "kwargs": {}}, headers)
        assert status == 404, (name, status, started)
        assert started["error"]["code"] == "unknown_task", started


async def test_embedded_page_shows_a_bar_the_browser_can_open(embedded: Running) -> None:
    """`{% taskpulse_scripts %}` and `{% task_progress result %}` render the element with
    a token; a browser on the site's own origin opens the WebSocket with it and sees the
    task finish; a page on another origin is refused (403)."""
    html, task_id, token = embedded.page("tracked", steps=3, delay=0.1)
    assert '<script type="module" src="/static/taskpulse/task-progress.js"></script>' in html
    assert '<link rel="stylesheet" href="/static/taskpulse/taskpulse.css">' in html
    async with connect(embedded.ws, origin=embedded.base) as conn:
        frames = await watch(Ws(conn), {task_id: token})
    final = check_stream(frames[task_id], "SUCCESS")
    assert final["result"] == {"steps": 3}

    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(embedded.ws, origin="http://evil.example.test"):
            pass
    assert refused.value.response.status_code == 403


def test_embedded_page_of_step_6_shows_a_moving_bar(embedded: Running) -> None:
    """The page of the doc's step 6, made and served only as its numbered steps say
    (stock daphne, WhiteNoise), shows a bar that moves to "Done" in Chromium."""
    see_the_bar_move(embedded)


# Settings of a worker that runs the site's tasks without TaskPulse's hooks.
WITHOUT_TASKPULSE = (
    "from mysite.settings import *  # noqa: F403\n\n"
    'INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "progress"]  # noqa: F405\n'
)
QUEUED_HINT_TIMEOUT_MS = 45_000  # the element's default 30 s, and the page's start


def test_worker_without_taskpulse_gets_a_hint_on_the_page(
        embedded: Running, redis_client: redis.Redis) -> None:
    """A worker whose settings lack the `progress` app runs the task to SUCCESS and
    records nothing: the page stays at "Queued" and, after 30 s, says the task may be
    on a worker without TaskPulse or on another Redis or key prefix."""
    if embedded.broker != "redis":
        pytest.skip("the hint does not depend on the broker: the Redis one shows it")
    (embedded.site / "mysite" / "settings_without_taskpulse.py").write_text(WITHOUT_TASKPULSE)
    queue = f"{embedded.prefix}-bare"
    env = {**embedded.env, "DJANGO_SETTINGS_MODULE": "mysite.settings_without_taskpulse"}
    bare = worker_proc(embedded.venv, embedded.site, env, queue)
    bare.argv += ["-Q", queue]
    bare.start()
    try:
        bare.wait_marker()
        with chromium() as browser:
            context = browser.new_context(base_url=embedded.base)
            context.set_default_timeout(ACTION_TIMEOUT_MS)
            page = context.new_page()
            try:
                page.goto(f"/jobs/page/doc-on-queue/?steps=5&queue={queue}")
                element = page.locator("task-progress")
                task_id = element.get_attribute("task-id")
                assert task_id
                embedded.task_ids.append(task_id)
                page.locator('task-progress[data-hint="queued"]').wait_for(
                    timeout=QUEUED_HINT_TIMEOUT_MS)
                assert element.get_attribute("data-state") == "PENDING"
                assert element.locator(".taskpulse-state").inner_text() == "Queued"
                hint = element.locator(".taskpulse-hint").inner_text()
                assert hint.startswith("Still queued after 30 s.") and \
                    "running without TaskPulse" in hint, hint
            finally:
                context.close()
        meta = redis_client.get(f"celery-task-meta-{task_id}")
        assert meta is not None and json.loads(meta)["status"] == "SUCCESS", meta
    finally:
        bare.stop()


def test_embedded_collectstatic_collects_the_element(embedded: Running) -> None:
    """`manage.py collectstatic --noinput` (STATIC_ROOT from the doc) copies the element,
    the client and the stylesheet from the installed app."""
    embedded.manage("collectstatic", "--noinput")
    collected = embedded.site / "staticfiles" / "taskpulse"
    for name in ("task-progress.js", "client.js", "subscription.js", "taskpulse.css"):
        assert (collected / name).is_file(), f"{name} not collected: {sorted(collected.iterdir())}"


# -- status server: the host site stays WSGI; TaskPulse is a separate service ------

SERVICE_ORIGIN_HOST = "localhost"  # the host site's pages are served as http://localhost:PORT


@dataclass
class StatusHost:
    """The host site of the status-server set-up, its token key, and the port its
    pages expect the TaskPulse service on."""

    running: Running
    token_key: str
    service_port: int


@pytest.fixture(scope="module")
def status_host(host_venv: Venv, tmp_path_factory: pytest.TempPathFactory,
                redis_client: redis.Redis) -> Iterator[StatusHost]:
    """The host site set up as docs/INTEGRATION.md's status-server steps say, under
    gunicorn (WSGI: it serves no WebSocket; WhiteNoise serves its static files), and its
    worker; with the shared token key."""
    prefix = f"tpadopt{secrets.token_hex(3)}"
    token_key = secrets.token_urlsafe(50)
    service_port = processes.free_port()
    values: dict[str, object] = {
        "TASKPULSE_REDIS_URL": REDIS_URL,
        "TASKPULSE_KEY_PREFIX": prefix,
        "CELERY_TASK_DEFAULT_QUEUE": prefix,
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_RESULT_BACKEND": REDIS_URL,
    }
    site = make_site(host_venv, tmp_path_factory.mktemp("status-host"), "status server",
                     values, service_ws=processes.ws_url(service_port))
    env = clean_env(host_venv.bin, TASKPULSE_TOKEN_KEY=token_key)
    port = processes.free_port()
    web = processes.Proc(f"gunicorn:{port}", [host_venv.exe("gunicorn"), "-b",
                                        f"127.0.0.1:{port}", "--workers", "2",
                                        "mysite.wsgi:application"], env, cwd=site)
    running = Running(site, host_venv, env, prefix, port, web,
                      worker_proc(host_venv, site, env, prefix))
    try:
        start_running(running, "/jobs/ping/")
        yield StatusHost(running, token_key, service_port)
    finally:
        running.stop()
        delete_redis_data(redis_client, prefix, running.task_ids)


@dataclass
class Service:
    proc: processes.Proc
    port: int

    @property
    def ws(self) -> str:
        return processes.ws_url(self.port)

    @property
    def base(self) -> str:
        return processes.http_url(self.port)


def write_service(directory: Path) -> None:
    """The doc's three-file service package `taskpulse_server` in `directory`."""
    blocks = doc_blocks()
    package = directory / "taskpulse_server"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in SERVICE_FILES:
        (directory / name).write_text(blocks[name])


@pytest.fixture(params=["project", "own-settings", "own-settings-daphne"])
def status_service(request: pytest.FixtureRequest, status_host: StatusHost,
                   host_venv: Venv, tmp_path: Path) -> Iterator[Service]:
    """TaskPulse as its own service on the host's Redis and prefix, with the shared token
    key and its own SECRET_KEY, on the port the host's pages name: this repository's
    project/ (from this checkout's venv), or the doc's three-file settings package (from
    the wheel's venv) under the tuned launcher or stock daphne."""
    host, token_key = status_host.running, status_host.token_key
    port = status_host.service_port
    common = {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),  # not the host's
        "TASKPULSE_TOKEN_KEY": token_key,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",  # the service's own name
        "TASKPULSE_ALLOWED_ORIGINS": SERVICE_ORIGIN_HOST,  # the host site's pages
        "REDIS_URL": REDIS_URL,
        "TASKPULSE_PREFIX": host.prefix,
    }
    listen = ["--bind", "127.0.0.1", "--port", str(port)]
    if request.param == "project":
        argv = [sys.executable, "-m", "consumers.serve", "project.asgi:application", *listen]
        env, cwd = clean_env(DJANGO_DEBUG="1", **common), ROOT
        health = "/healthz"
    else:
        write_service(tmp_path)
        if request.param == "own-settings":
            argv = [host_venv.python, "-m", "consumers.serve",
                    "taskpulse_server.asgi:application", *listen]
        else:
            argv = [host_venv.exe("daphne"), "-b", "127.0.0.1", "-p", str(port),
                    "taskpulse_server.asgi:application"]
        env, cwd = clean_env(host_venv.bin, **common), tmp_path
        health = "/api/healthz"
    proc = processes.Proc(f"service:{request.param}:{port}", argv, env, cwd=cwd).start()
    try:
        processes.wait_http_ok(f"http://127.0.0.1:{port}{health}", proc=proc)
        yield Service(proc, port)
    finally:
        proc.stop()


async def test_status_server_streams_the_hosts_task(status_host: StatusHost,
                                                    status_service: Service) -> None:
    """A page of the host site (its token signed with the shared key) watches the task the
    host's worker runs, over the separate service, from the host's origin, to SUCCESS;
    the service's HTTP API accepts the same token. Another origin is refused, and so
    is a token signed with another key."""
    host = status_host.running
    html, task_id, token = host.page("tracked", host=SERVICE_ORIGIN_HOST, steps=5, delay=0.2)
    assert "/static/taskpulse/task-progress.js" in html
    status, script = Http(f"http://{SERVICE_ORIGIN_HOST}:{host.port}").request(
        "GET", "/static/taskpulse/task-progress.js")  # WhiteNoise, under gunicorn
    assert status == 200 and b"task-progress" in script

    origin = f"http://{SERVICE_ORIGIN_HOST}:{host.port}"
    async with connect(status_service.ws, origin=origin) as conn:
        frames = await watch(Ws(conn), {task_id: token})
    final = check_stream(frames[task_id], "SUCCESS")
    assert final["result"] == {"steps": 5}
    check_progress(frames[task_id], total=5)

    status, body = Http(status_service.base).request(
        "GET", f"/api/tasks/{task_id}/", headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and body["state"] == "SUCCESS" and body["seq"] == final["seq"], body

    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(status_service.ws, origin="http://evil.example.test"):
            pass
    assert refused.value.response.status_code == 403

    # The host without the shared key (its SECRET_KEY, say) signs tokens the service refuses.
    issue = f"from progress.tokens import issue_token; print(issue_token({task_id!r}))"
    wrong = host.manage("shell", "-c", issue, TASKPULSE_TOKEN_KEY=secrets.token_urlsafe(50))
    wrong = wrong.strip().splitlines()[-1]
    async with connect(status_service.ws, origin=origin) as conn:
        ws = Ws(conn)
        await ws.subscribe(task_id, wrong)
        error = await ws.recv()
    assert error["type"] == "error" and error["code"] == "forbidden", error
    assert error.get("task_id") == task_id


def test_status_server_page_of_step_6_shows_a_moving_bar(status_host: StatusHost,
                                                         status_service: Service) -> None:
    """The host's page of the status-server steps (gunicorn and WhiteNoise), pointed at
    the service, shows a bar that moves to "Done" in Chromium."""
    see_the_bar_move(status_host.running, host=SERVICE_ORIGIN_HOST)


def test_missing_environment_says_what_to_set(status_host: StatusHost, tmp_path: Path) -> None:
    """Without TASKPULSE_TOKEN_KEY the site's `manage.py` stops saying what to set (not a
    bare KeyError); so does the doc's service without DJANGO_SECRET_KEY. The service
    logs in UTC."""
    host = status_host.running
    env = {k: v for k, v in host.env.items() if k != "TASKPULSE_TOKEN_KEY"}
    done = subprocess.run([host.venv.python, "manage.py", "check"], cwd=host.site, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ImproperlyConfigured: Set the environment variable TASKPULSE_TOKEN_KEY" in \
        done.stderr, done.stderr
    assert "KeyError" not in done.stderr

    write_service(tmp_path)
    service_env = {"TASKPULSE_TOKEN_KEY": status_host.token_key,
                   "DJANGO_ALLOWED_HOSTS": "127.0.0.1", "TASKPULSE_ALLOWED_ORIGINS": "localhost",
                   "REDIS_URL": REDIS_URL, "DJANGO_SETTINGS_MODULE": "taskpulse_server.settings"}
    show = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.TIME_ZONE)")
    done = subprocess.run([host.venv.python, "-c", show], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env=clean_env(host.venv.bin, **service_env))
    assert done.returncode != 0
    assert "Set the environment variable DJANGO_SECRET_KEY" in done.stderr, done.stderr
    shown = run([host.venv.python, "-c", show], cwd=tmp_path, env=clean_env(
        host.venv.bin, DJANGO_SECRET_KEY=secrets.token_urlsafe(50), **service_env))
    assert shown.strip() == "UTC"
