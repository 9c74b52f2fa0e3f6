"""A/B of a publisher change: the published progress call of bench_publisher.py in two
worker-like processes side by side on one Redis, one importing a copy of the tree
from before the change, one this tree.

    rsync -a --exclude .venv --exclude .git ./ /tmp/tp-baseline/   # before the change
    .venv/bin/python -m bench.bench_publisher_ab --baseline /tmp/tp-baseline [--rounds 15]

Within a round the two processes take turns in slices of SLICE calls (the order
alternating from round to round), so a noisy neighbour slows both alike; figures
are per-call medians over the rounds (µs), and Redis' own µs per EVALSHA of the
record script (INFO commandstats, the private server runs nothing else).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from bench import report, stack

SLICE = 50
SERVER_SAMPLE = 2000
CASES = {
    "published": "TaskPulse published call, no mirror (TASKPULSE_ASYNCRESULT=0)",
    "mirrored": "TaskPulse published call + AsyncResult mirror, one round trip (default)",
}

# Runs in each variant's process, its tree first on sys.path: answers one JSON line
# per command read from stdin ("<case> <calls>", or "server <case>").
CHILD = r"""
import json, os, sys, time, uuid
tree = sys.argv.pop(1)
sys.path[:] = [tree] + [p for p in sys.path if p not in ("", os.getcwd())]
os.chdir(tree)
import django
django.setup()
import project.celery  # noqa: F401  (the app whose result backend the mirror writes)
import redis
from django.test import override_settings
from progress.publisher import track

client = redis.Redis.from_url(os.environ["REDIS_URL"])
reporters = {}
for case, mirror in (("published", False), ("mirrored", True)):
    with override_settings(TASKPULSE_MIN_INTERVAL=0, TASKPULSE_ASYNCRESULT=mirror):
        reporters[case] = track(f"bench-ab-{case}-{uuid.uuid4()}")
count = 0

def run(case, calls):
    global count
    reporter = reporters[case]
    started = time.perf_counter()
    for _ in range(calls):
        count += 1
        reporter.update(count, total=10**9, message="bench")
    return time.perf_counter() - started

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    what, arg = line.split()
    if what == "server":
        client.config_resetstat()
        run(arg, 2000)
        stats = client.info("commandstats")["cmdstat_evalsha"]
        print(json.dumps({"us": float(stats["usec_per_call"])}), flush=True)
    else:
        print(json.dumps({"seconds": run(what, int(arg))}), flush=True)
"""


class Variant:
    def __init__(self, name: str, tree: str, env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, tree], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.answer()

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} process ended (exit {self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="path of the tree before the change")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000, help="calls per case per round")
    opts = parser.parse_args()
    setup = report.machine()
    samples: dict[tuple[str, str], list[float]] = {
        (variant, case): [] for variant in ("baseline", "current") for case in CASES}
    with stack.private_redis() as server:
        env = stack.bench_env(server.url)
        variants = [Variant("baseline", opts.baseline, env), Variant("current", ".", env)]
        try:
            for r in range(opts.rounds):
                spent = dict.fromkeys(samples, 0.0)
                order = variants if r % 2 == 0 else variants[::-1]
                for _ in range(max(1, opts.calls // SLICE)):
                    for case in CASES:
                        for variant in order:
                            spent[variant.name, case] += variant.ask(f"{case} {SLICE}")["seconds"]
                for key, seconds in spent.items():
                    samples[key].append(seconds * 1e6 / (max(1, opts.calls // SLICE) * SLICE))
            server_us = {(v.name, case): v.ask(f"server {case}")["us"]
                         for v in variants for case in CASES}
        finally:
            for variant in variants:
                variant.stop()
    print(f"\n{setup}; {opts.rounds} rounds of {opts.calls} calls per case and variant\n")
    print("| path | before µs per call | after µs per call | after / before (median of "
          "per-round ratios) | Redis µs per EVALSHA before / after |")
    print("|---|---|---|---|---|")
    for case, label in CASES.items():
        before, after = samples["baseline", case], samples["current", case]
        ratio = report.median([a / b for a, b in zip(after, before, strict=True)])
        print(f"| {label} | {report.median(before):.1f} | {report.median(after):.1f} | "
              f"{ratio:.3f} | {server_us['baseline', case]:.1f} / "
              f"{server_us['current', case]:.1f} |")


if __name__ == "__main__":
    main()
