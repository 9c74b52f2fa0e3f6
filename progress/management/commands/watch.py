"""`python manage.py watch <task_id> [<task_id> ...] [--json]`: follow tasks from a terminal.

A live bar per task (rich draws it: message, rate, ETA), then each task's result
or error. `--json` prints one PROTOCOL.md §3 object per line, in order, and draws
nothing: for pipes (a stdout that is not a terminal implies it).

Exit status: 0 every task ended SUCCESS, 1 one ended FAILURE, 2 one ended REVOKED
or LOST, 3 an unknown task id (the worst of these wins).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from progress.watching import awatch
from progress.wire.ids import is_valid_task_id
from progress.wire.states import UNKNOWN, State
from progress.wire.types import TaskObject

EXIT_SUCCESS, EXIT_FAILURE, EXIT_STOPPED, EXIT_UNKNOWN = 0, 1, 2, 3
EXIT_OF_STATE = {State.SUCCESS: EXIT_SUCCESS, State.FAILURE: EXIT_FAILURE,
                 State.REVOKED: EXIT_STOPPED, State.LOST: EXIT_STOPPED}


class Command(BaseCommand):
    help = "Follow tasks to their final state: a live bar each, or --json lines."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("task_ids", nargs="+", metavar="task_id")
        parser.add_argument("--json", action="store_true",
                            help="one §3 object per line, nothing drawn (implied when "
                                 "stdout is not a terminal)")
        parser.add_argument("--timeout", type=float, default=None,
                            help="give up after this many seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        task_ids: list[str] = options["task_ids"]
        bad = [task_id for task_id in task_ids if not is_valid_task_id(task_id)]
        if bad:
            raise CommandError(f"not a task id: {', '.join(bad)}")
        as_json = options["json"] or not sys.stdout.isatty()
        follow = _follow_json if as_json else _follow_bars
        finals = asyncio.run(follow(task_ids, options["timeout"], self.stdout.write))
        status = max(EXIT_OF_STATE.get(State(final["state"]), EXIT_FAILURE)
                     if final is not None else EXIT_UNKNOWN for final in finals.values())
        if status:
            sys.exit(status)


async def _first_or_unknown(task_id: str, timeout: float | None) -> Any:
    """The task's objects as an async iterator, or None when it has no record."""
    objects = awatch(task_id, timeout=timeout)
    first = await anext(objects)
    if first["state"] == UNKNOWN:
        await objects.aclose()
        return None, first
    return objects, first


async def _follow_json(task_ids: list[str], timeout: float | None,
                       write: Any) -> dict[str, TaskObject | None]:
    finals: dict[str, TaskObject | None] = {}

    async def one(task_id: str) -> None:
        objects, first = await _first_or_unknown(task_id, timeout)
        if objects is None:
            sys.stderr.write(f"unknown task id: {task_id}\n")
            finals[task_id] = None
            return
        found: TaskObject = first
        write(json.dumps(found, separators=(",", ":")))
        async for found in objects:
            write(json.dumps(found, separators=(",", ":")))
        finals[task_id] = found

    await asyncio.gather(*(one(task_id) for task_id in task_ids))
    return finals


async def _follow_bars(task_ids: list[str], timeout: float | None,
                       write: Any) -> dict[str, TaskObject | None]:
    try:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
    except ImportError:
        raise CommandError("drawing bars needs rich (pip install 'taskpulse[cli]'); "
                           "or pass --json") from None
    console = Console()
    finals: dict[str, TaskObject | None] = {}
    columns = (TextColumn("{task.fields[name]}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[eta]}"),
               TextColumn("{task.fields[state]} {task.fields[message]}"))
    with Progress(*columns, console=console) as bars:
        async def one(task_id: str) -> None:
            objects, first = await _first_or_unknown(task_id, timeout)
            if objects is None:
                console.print(f"[red]unknown task id: {task_id}[/red]")
                finals[task_id] = None
                return
            bar = bars.add_task(task_id, total=None, name=first.get("name") or task_id,
                                rate="", eta="", state="", message="")
            started = (time.monotonic(), float(first["progress"]["current"] or 0))
            found: TaskObject = first
            _draw(bars, bar, found, started)
            async for found in objects:
                _draw(bars, bar, found, started)
            finals[task_id] = found
            console.print(_outcome(task_id, found))

        await asyncio.gather(*(one(task_id) for task_id in task_ids))
    return finals


def _draw(bars: Any, bar: Any, found: TaskObject, started: tuple[float, float]) -> None:
    progress = found["progress"]
    current = float(progress["current"] or 0)
    elapsed = time.monotonic() - started[0]
    rate = (current - started[1]) / elapsed if elapsed > 0.5 else None
    eta = found.get("eta")
    bars.update(bar, total=progress["total"], completed=current,
                rate=f"{rate:.1f}/s" if rate else "",
                eta=f"ETA {eta:.0f}s" if eta is not None and not found["final"] else "",
                state=found["state"], message=progress["message"] or "")


def _outcome(task_id: str, final: TaskObject) -> str:
    if final["state"] == State.SUCCESS:
        return f"{task_id}: SUCCESS {json.dumps(final['result'])}"
    error = final.get("error") or {}
    return f"{task_id}: {final['state']} {error.get('type', '')}: {error.get('message', '')}"
