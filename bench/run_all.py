"""Run every benchmark in turn; each rewrites its own section of docs/BENCHMARKS.md.

    .venv/bin/python -m bench.run_all [--only latency,fanout] [--quick]

`--quick` runs fewer and shorter rounds (a smoke test of the scripts, not figures
to publish). The Publisher section is bench/bench_publisher.py's (issue 4).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.report import ROOT

# name -> (module, full arguments, quick arguments)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "latency": ("bench.bench_latency", [], ["--runs", "1", "--events", "200"]),
    "fanout": ("bench.bench_fanout", ["--runs", "2", "--seconds", "5", "--rates", "10,5,2"],
               ["--runs", "1", "--seconds", "3", "--servers", "daphne"]),
    "idle": ("bench.bench_idle", [], ["--runs", "1", "--counts", "1000"]),
    "storm": ("bench.bench_storm", [], ["--runs", "1", "--clients", "2000"]),
    "polling": ("bench.bench_polling", [], ["--runs", "1", "--seconds", "8"]),
    "publisher": ("bench.bench_publisher", [], ["--rounds", "2", "--calls", "500"]),
    "layer": ("bench.bench_layer", [], ["--rounds", "1", "--events", "5000"]),
    "sse": ("bench.bench_sse", [], ["--runs", "1", "--events", "100", "--idle", "100",
                                    "--clients", "50", "--seconds", "3"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    failed = []
    for name in args.only.split(","):
        module, full, quick = BENCHMARKS[name]
        if not (ROOT / (module.replace(".", "/") + ".py")).exists():
            print(f"== {name}: {module} does not exist yet, skipped", flush=True)
            continue
        argv = [sys.executable, "-m", module, *(quick if args.quick else full)]
        print(f"== {name}: {' '.join(argv[1:])}", flush=True)
        t0 = time.monotonic()
        code = subprocess.run(argv, cwd=ROOT).returncode
        print(f"== {name}: exit {code} after {time.monotonic() - t0:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
