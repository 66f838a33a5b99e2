"""Engine benchmark (issue 2 targets): RTN throughput on this machine, with numpy and the
memory-read bandwidth measured in the same run as baselines.

    python bench/bench_engine.py [--quick] [--json bench/results/engine.json]

Every figure is the median of several repetitions (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(__file__))
import arrowquant as aq  # noqa: E402
from bench_common import cpu_model, median_seconds  # noqa: E402
from numpy_reference import dequantize_rtn, quantize_rtn  # noqa: E402


def one_layer_batch(w: np.ndarray) -> pa.RecordBatch:
    # pa.array over a numpy view: the list's values buffer is the numpy memory (no copy).
    values = pa.array(w.reshape(-1), pa.float32())
    weights = pa.LargeListArray.from_arrays(pa.array([0, w.size], pa.int64()), values)
    return pa.record_batch({"layer_name": ["w"], "weights": weights, "shape": pa.array([list(w.shape)], pa.list_(pa.int64()))})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke test)")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "engine.json"))
    args = parser.parse_args()

    big = 4 * 1024 * 1024 if args.quick else 64 * 1024 * 1024  # weights: 16 MB or 256 MB of float32
    repeats = 3 if args.quick else 9
    rng = np.random.default_rng(0)
    w = rng.standard_normal((big // 4096, 4096), dtype=np.float32)
    results: dict[str, float] = {}

    # Baselines: streaming read (numpy max is a vectorised single pass) and numpy's RTN.
    results["memory_read_mweights_s"] = big / median_seconds(lambda: w.max(), repeats) / 1e6
    numpy_n = min(big, 16 * 1024 * 1024)
    wn = w.reshape(-1)[:numpy_n]
    results["numpy_rtn4_g128_mweights_s"] = numpy_n / median_seconds(lambda: quantize_rtn(wn), max(3, repeats // 3)) / 1e6
    packed, s, z = quantize_rtn(wn)
    results["numpy_dequant4_g128_mweights_s"] = numpy_n / median_seconds(
        lambda: dequantize_rtn(packed, s, z, numpy_n), max(3, repeats // 3)) / 1e6

    batch = one_layer_batch(w)
    single = aq.ArrowQuantV2(group_size=128, num_threads=1)
    allcores = aq.ArrowQuantV2(group_size=128)
    results["rtn4_g128_1thread_mweights_s"] = big / median_seconds(lambda: single.quantize_arrow_batch(batch, 4), repeats) / 1e6
    results["rtn4_g128_allcores_mweights_s"] = big / median_seconds(lambda: allcores.quantize_arrow_batch(batch, 4), repeats) / 1e6
    for bits in (2, 8):
        results[f"rtn{bits}_g128_1thread_mweights_s"] = big / median_seconds(
            lambda: single.quantize_arrow_batch(batch, bits), repeats) / 1e6
    quantized = pa.Table.from_batches([single.quantize_arrow_batch(batch, 4)])
    results["dequant4_g128_1thread_mweights_s"] = big / median_seconds(lambda: single.dequantize_arrow(quantized), repeats) / 1e6
    results["dequant4_g128_allcores_mweights_s"] = big / median_seconds(lambda: allcores.dequantize_arrow(quantized), repeats) / 1e6

    # End to end through quantize_arrow: one 4 MB tensor; 100 layers of 1,000 weights.
    w4 = rng.standard_normal((1024, 1024), dtype=np.float32)
    t4 = pa.Table.from_batches([one_layer_batch(w4)])
    results["e2e_4mb_tensor_ms"] = median_seconds(lambda: allcores.quantize_arrow(t4, 4), 51, warmup=5) * 1e3
    small = pa.table({"layer_name": [f"l{i}" for i in range(100)],
                      "weights": pa.array([rng.standard_normal(1000).astype(np.float32) for _ in range(100)],
                                          pa.list_(pa.float32()))})
    results["e2e_100x1000_layers_ms"] = median_seconds(lambda: allcores.quantize_arrow(small, 4), 101, warmup=10) * 1e3

    results["rtn4_vs_memory_read"] = results["rtn4_g128_1thread_mweights_s"] / results["memory_read_mweights_s"]
    results["rtn4_vs_numpy"] = results["rtn4_g128_1thread_mweights_s"] / results["numpy_rtn4_g128_mweights_s"]

    targets = {
        "rtn4_g128_1thread_mweights_s": (">=", 2000),
        "dequant4_g128_1thread_mweights_s": (">=", 3000),
        "e2e_4mb_tensor_ms": ("<=", 1.0),
        "e2e_100x1000_layers_ms": ("<=", 0.5),
    }
    info = aq.simd_info()
    record = {
        "benchmark": "engine",
        "cpu": cpu_model(),
        "simd_path": info["active"],
        "hardware_threads": info["hardware_threads"],
        "versions": {"arrowquant": aq.__version__, "pyarrow": pa.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "weights_per_run": big,
        "quick": args.quick,
        "results": results,
    }
    print(f"arrowquant {aq.__version__}, SIMD path {info['active']}, {info['hardware_threads']} threads, {cpu_model()}")
    print(f"{'measure':<38} {'median':>12}  target")
    for key, value in results.items():
        target = targets.get(key)
        mark = ""
        if target:
            op, goal = target
            met = value >= goal if op == ">=" else value <= goal
            mark = f"{op} {goal:g}  {'met' if met else 'MISSED by ' + format(abs(value - goal) / goal, '.0%')}"
        print(f"{key:<38} {value:>12.3f}  {mark}")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
