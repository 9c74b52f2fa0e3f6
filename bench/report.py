"""Statistics and the writing of docs/BENCHMARKS.md.

Each benchmark owns one section between `<!-- bench:NAME -->` markers and
replaces only that; everything else in the document (the Publisher section,
the notes) is left as it is.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BENCHMARKS.md"
DATA = ROOT / "docs" / "bench-data"

SECTIONS = ["setup", "latency", "fanout", "idle", "storm", "polling", "layer", "profile"]

SKELETON = """# Benchmarks

Measured on the real stack on this project's machine (2 cores, 24 GiB, shared
with other test runs, so every comparison below is made side by side in one
run and repeated; figures are medians over the runs unless marked). Run them
all with

    .venv/bin/pip install -e ".[test,bench]"
    .venv/bin/python -m bench.run_all            # or one: python -m bench.bench_latency

Every benchmark starts its own redis-server on a free port (never the shared
one), its own web server(s) and workers with a private key prefix and queue,
and rewrites only its own section below.

"""


def percentile(values: Sequence[float], p: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), p)) if values else float("nan")


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values) if values else float("nan")}


def median(values: Sequence[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def command_line() -> str:
    args = " ".join(shlex.quote(a) for a in sys.argv[1:])
    module = Path(sys.argv[0]).stem
    return f".venv/bin/python -m bench.{module}" + (f" {args}" if args else "")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                   text=True).stdout.split()[2]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; "
            f"Redis {redis_version.removeprefix('v=')}; load average at start {load}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def save_plot(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as the docs' PNG and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)


def save_data(name: str, data: Any) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")


def write_section(name: str, markdown: str) -> None:
    """Replace (or add) this benchmark's section of docs/BENCHMARKS.md."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else SKELETON
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    print(markdown)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
