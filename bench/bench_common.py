"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import platform
import statistics
import time


# The head of a script run in a fresh process to measure its peak RSS: `status("VmHWM:")` after
# the work, minus `before`, is the peak above the process's baseline.
PEAK_RSS_PRELUDE = """
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
before = status("VmHWM:")
"""


def bench_args(doc: str):
    """The arguments every benchmark script takes: --quick (smallest size, one repeat: the CI
    smoke run) and --json PATH (write the result there too)."""
    import argparse
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest size, one repeat (CI smoke run)")
    parser.add_argument("--json", help="also write the result here")
    return parser.parse_args()


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() over `repeats` runs, after `warmup` unmeasured ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def emit(result: dict, json_path: str | None) -> None:
    """Print a benchmark's result as JSON, and write it to json_path if given."""
    import json
    from pathlib import Path
    print(json.dumps(result, indent=2))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))


def load_ggml():
    """ggml-quants.c from the llama-cpp-python sdist (tests/ggml/build.sh, `make ggml-ref`) through
    ctypes; exits with what to run if it is not built."""
    import ctypes
    import sys
    from pathlib import Path
    lib = Path(__file__).resolve().parent.parent / "build" / "ggml-ref" / "libggml-quants.so"
    if not lib.is_file():
        sys.exit(f"{lib} is missing: run `make ggml-ref` (tests/ggml/build.sh) first")
    return ctypes.CDLL(str(lib))
