"""Run a web server whose first SIGUSR1 starts tracemalloc and whose second writes
where the memory allocated since then went (still alive), by source line.

    python -c "import bench.memprobe as m; m.run('daphne')" --bind 127.0.0.1 --port N

Used by `bench_idle --probe` to find what an idle connection costs.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

OUT = Path(os.environ.get("TASKPULSE_MEMPROBE_OUT", "/tmp/taskpulse-memprobe"))
FRAMES = 1


def _toggle(signum: int, frame: FrameType | None) -> None:
    index = len(list(OUT.parent.glob(OUT.name + "-*.snap")))
    if not tracemalloc.is_tracing():
        tracemalloc.start(FRAMES)
        Path(f"{OUT}-{index}.snap").write_bytes(b"")
        return
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    snapshot.dump(f"{OUT}-{index}.tmp")
    os.rename(f"{OUT}-{index}.tmp", f"{OUT}-{index}.snap")


def run(server: str) -> None:
    signal.signal(signal.SIGUSR1, _toggle)
    if server == "daphne":
        sys.argv = ["consumers.serve", "project.asgi:application", *sys.argv[1:]]
        runpy.run_module("consumers.serve", run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["uvicorn", "project.asgi:application", *sys.argv[1:]]
        runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
