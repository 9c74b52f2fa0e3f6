"""Profile the web process under fan-out load with py-spy, and print where it spends time.

    .venv/bin/python -m bench.profile_server [--server daphne] [--scenario 1] [--seconds 15]

Runs one fan-out scenario of bench_fanout while `py-spy record` samples the
server process; writes the collapsed stacks to docs/bench-data/profile-<server>.txt
and prints the functions with the most inclusive and self samples.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
from pathlib import Path

from bench import bench_fanout, report, stack


def top(collapsed: Path, n: int = 25) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text:
            continue
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].split("/")[-1] + ")"
                  if " (" in f else f for f in stack_text.split(";")]
        total += count
        for f in set(frames):
            inclusive[f] += count
        own[frames[-1]] += count
    return total, inclusive.most_common(n), own.most_common(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="daphne", choices=stack.SERVERS)
    parser.add_argument("--scenario", type=int, default=1, help="index into bench_fanout.SCENARIOS")
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(stack.sys.executable).parent / "py-spy")
    stack.raise_fd_limit()
    out = report.DATA / f"profile-{args.server}.txt"
    report.DATA.mkdir(parents=True, exist_ok=True)
    with stack.private_redis() as redis_server:
        env = stack.bench_env(redis_server.url)
        stack.setup_django(env)
        proc, port = stack.start_web(args.server, env)
        try:
            started: list[subprocess.Popen[bytes]] = []

            def start_profiler() -> None:
                started.append(subprocess.Popen(
                    [spy, "record", "-p", str(proc.pid), "-d", str(int(args.seconds)),
                     "-r", "250", "-f", "raw", "-o", str(out), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

            bench_fanout.one_run(args.server, port, proc.pid, env,
                                 bench_fanout.SCENARIOS[args.scenario], args.rate, args.seconds,
                                 on_go=start_profiler)
            started[0].wait(60)
        finally:
            proc.stop()
            errors = [line for line in proc.lines if "Error" in line or "Traceback" in line]
            print("\n".join(errors[:20]))
    total, inclusive, own = top(out)
    print(f"{total} samples in {out}")
    print("\ninclusive:")
    for name, count in inclusive:
        print(f"{100 * count / total:6.1f}%  {name}")
    print("\nself:")
    for name, count in own:
        print(f"{100 * count / total:6.1f}%  {name}")


if __name__ == "__main__":
    main()
