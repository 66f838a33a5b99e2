"""Start-up time: `import arrowquant` and `arrowquant --help` against `python -c pass` (the
interpreter's own start) in the same run. Target (issue 23): --help at most 0.5 s.

    python bench/bench_startup.py [--quick] [--json bench/results/startup.json]

Each figure is the median wall time of fresh processes (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_common import cpu_model  # noqa: E402


def median_wall(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one run each (a smoke test)")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "startup.json"))
    args = parser.parse_args()
    repeats = 1 if args.quick else 5
    command = shutil.which("arrowquant", path=os.path.dirname(sys.executable)) or shutil.which("arrowquant")
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import arrowquant": [sys.executable, "-c", "import arrowquant"],
        "arrowquant --help": [command, "--help"] if command else [sys.executable, "-m", "arrowquant", "--help"],
    }
    median_wall(cases["import arrowquant"], 1)  # warm the page cache first
    results = {name: median_wall(cmd, repeats) for name, cmd in cases.items()}
    base = results["python -c pass"]
    for name, seconds in results.items():
        print(f"{name:20s} {seconds:6.3f} s  ({seconds - base:+.3f} s over the interpreter)")
    report = {"machine": cpu_model(), "platform": platform.platform(), "repeats": repeats,
              "seconds": results, "target_help_seconds": 0.5}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
