"""Checkpoint benchmark (issue 3 targets): safetensors -> .aq throughput against the speed of
reading the same file from the page cache, and peak resident memory, measured in one run.

    python bench/bench_checkpoint.py [--mb 300] [--json bench/results/checkpoint.json]

Each quantization runs in a fresh child process. Its peak is VmHWM from /proc/self/status (the
high-water mark of that process's own address space; ru_maxrss would not do: Linux carries it
across exec from the forking parent), its baseline the RSS after importing arrowquant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

CHILD = r"""
import json, sys, time
import arrowquant as aq
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
def high_water_mark():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
baseline = rss()
t0 = time.perf_counter()
report = aq.ArrowQuantV2(group_size=128).quantize_from_safetensors(sys.argv[1], sys.argv[2], bit_width=4,
                                                                   method=sys.argv[3])
seconds = time.perf_counter() - t0
peak = high_water_mark()
print(json.dumps({"seconds": seconds, "baseline_rss": baseline, "peak_rss": peak,
                  "input_bytes": report["input_bytes"], "output_bytes": report["output_bytes"],
                  "mean_cosine": report["mean_cosine"]}))
"""


def make_checkpoint(path: str, total_mb: int) -> int:
    """A UNet-like checkpoint of float32 and float16 tensors; returns the largest tensor's bytes."""
    from safetensors.numpy import save_file
    rng = np.random.default_rng(0)
    tensors, size, i = {}, 0, 0
    shapes = [(1280, 1280, 3, 3), (640, 2560), (1280, 320, 3, 3), (5120, 1280), (320, 320)]
    while size < total_mb * 1e6:
        shape = shapes[i % len(shapes)]
        dtype = np.float16 if i % 3 == 2 else np.float32
        t = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dtype)
        tensors[f"unet.block.{i}.weight"] = t
        tensors[f"unet.block.{i}.bias"] = np.zeros(shape[0], dtype)
        size += t.nbytes
        i += 1
    save_file(tensors, path)
    return max(t.nbytes for t in tensors.values())


def page_cache_read_seconds(path: str) -> float:
    buf = bytearray(16 * 1024 * 1024)
    view = memoryview(buf)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(view):
            pass
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=300, help="checkpoint size in MB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "checkpoint.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "model.safetensors"), os.path.join(tmp, "model.aq")
        largest = make_checkpoint(src, args.mb)  # the tensors are freed before any child starts
        size = os.path.getsize(src)
        page_cache_read_seconds(src)  # warm the page cache
        reads = [page_cache_read_seconds(src) for _ in range(5)]
        runs: dict[str, list] = {"rtn": [], "search": []}
        for method in runs:
            for _ in range(args.repeats + 1):
                r = subprocess.run([sys.executable, "-c", CHILD, src, out, method], capture_output=True, text=True,
                                   check=True)
                runs[method].append(json.loads(r.stdout.strip().splitlines()[-1]))
            runs[method] = runs[method][1:]  # the first run also pays for the output file's first pages
    read_mb_s = size / statistics.median(reads) / 1e6
    budget = largest + 64 * 2**20
    results = {"checkpoint_mb": size / 1e6, "largest_tensor_mb": largest / 1e6, "page_cache_read_mb_s": read_mb_s,
               "rss_budget_mb": budget / 1e6}
    for method, method_runs in runs.items():
        mb_s = size / statistics.median(r["seconds"] for r in method_runs) / 1e6
        results[f"{method}_quantize_to_aq_mb_s"] = mb_s
        results[f"{method}_speed_vs_page_cache_read"] = mb_s / read_mb_s
        results[f"{method}_peak_rss_over_baseline_mb"] = max(r["peak_rss"] - r["baseline_rss"] for r in method_runs) / 1e6
        results[f"{method}_compression_ratio"] = size / method_runs[0]["output_bytes"]
        results[f"{method}_mean_cosine"] = method_runs[0]["mean_cosine"]
    peak_over_baseline = max(results["rtn_peak_rss_over_baseline_mb"], results["search_peak_rss_over_baseline_mb"]) * 1e6
    print(f"checkpoint {size / 1e6:.0f} MB, largest tensor {largest / 1e6:.1f} MB")
    for k, v in results.items():
        print(f"{k:<28} {v:>10.3f}")
    for method in ("rtn", "search"):
        ratio = results[f"{method}_speed_vs_page_cache_read"]
        print(f"target ({method}): speed >= 0.5x page-cache read: {'met' if ratio >= 0.5 else 'MISSED'}")
    print(f"target: peak RSS <= largest tensor + 64 MB: {'met' if peak_over_baseline <= budget else 'MISSED'}")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json + ".tmp", "w") as f:
        json.dump({"benchmark": "checkpoint", "results": results, "runs": runs}, f, indent=2)
    os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
