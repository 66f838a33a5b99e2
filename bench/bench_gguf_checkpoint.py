"""A whole BF16 checkpoint to GGUF Q4_K_M on every core, against the page-cache read speed of the same
file and the peak memory of the process (measured in a fresh subprocess per run), with the default
method (search) with and without error statistics, and with method="ggml".

    python bench/bench_gguf_checkpoint.py [--quick] [--json out.json]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from bench_common import bench_args, PEAK_RSS_PRELUDE, emit

RUN = """
import json, sys, time
import arrowquant.gguf as ag
""" + PEAK_RSS_PRELUDE + """t0 = time.perf_counter()
report = ag.convert(sys.argv[1], sys.argv[2], type="Q4_K_M", overwrite=True, with_stats=sys.argv[3] == "1",
                    method=sys.argv[4])
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_rss_kb": status("VmHWM:"), "baseline_rss_kb": before,
                  "output_bytes": report["bytes_after"]}))
"""


def make_checkpoint(path: Path, layers: int) -> tuple[int, int]:
    """A Flux-like BF16 checkpoint: `layers` double blocks of 3072-wide projections."""
    rng = np.random.default_rng(0)
    tensors = {}
    for i in range(layers):
        for name, shape in ((f"double_blocks.{i}.img_attn.qkv.weight", (3 * 1024, 3072)),
                            (f"double_blocks.{i}.img_attn.proj.weight", (3072, 3072)),
                            (f"double_blocks.{i}.img_mlp.0.weight", (4096, 3072)),
                            (f"double_blocks.{i}.img_mlp.2.weight", (3072, 4096)),
                            (f"double_blocks.{i}.img_attn.norm.query_norm.scale", (128,))):
            tensors[name] = (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(ml_dtypes.bfloat16)
    save_file(tensors, str(path))
    largest = max(t.nbytes for t in tensors.values())
    return path.stat().st_size, largest


def read_speed(path: Path) -> float:
    """Page-cache read bandwidth of the file (bytes/s), median of 3 warm reads."""
    with open(path, "rb") as f:
        f.read()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass
        times.append(time.perf_counter() - t0)
    return path.stat().st_size / statistics.median(times)


def main() -> None:
    args = bench_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "flux.safetensors", Path(tmp) / "flux-Q4_K_M.gguf"
        size, largest = make_checkpoint(src, 1 if args.quick else 4)
        bandwidth = read_speed(src)
        rows = {}
        for method, stats, key in (("search", "0", "no_stats"), ("search", "1", "with_stats"),
                                   ("ggml", "0", "ggml_no_stats")):
            runs = []
            for _ in range(1 if args.quick else 3):
                r = subprocess.run([sys.executable, "-c", RUN, str(src), str(out), stats, method], capture_output=True,
                                   text=True, check=True)
                runs.append(json.loads(r.stdout))
            best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
            rows[key] = {
                "seconds": best["seconds"], "mb_s": size / best["seconds"] / 1e6,
                "ratio_to_read": size / best["seconds"] / bandwidth,
                "peak_rss_above_baseline_mb": (best["peak_rss_kb"] - best["baseline_rss_kb"]) / 1024}
        result = {"checkpoint_mb": size / 1e6, "largest_tensor_mb": largest / 1e6, "cores": os.cpu_count(),
                  "page_cache_read_mb_s": bandwidth / 1e6, **rows}
        emit(result, args.json)


if __name__ == "__main__":
    main()
