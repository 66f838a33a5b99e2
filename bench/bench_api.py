"""API benchmark (issue 5): the Arrow path, the batch API, thread scaling, and peers on the same
data in the same run, with the memory-read bandwidth as a baseline.

    python bench/bench_api.py [--quick] [--json bench/results/api.json]

--quick runs the smallest size only (the CI smoke test). Figures are medians of repeated runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(__file__))
import arrowquant as aq  # noqa: E402
from bench_common import cpu_model, median_seconds  # noqa: E402
from arrowquant import _core  # noqa: E402
from numpy_reference import quantize_rtn  # noqa: E402


def layer_table(total_weights: int, layers: int, rng) -> pa.Table:
    per_layer = total_weights // layers
    cols = 4096 if per_layer >= 4096 else per_layer
    rows = per_layer // cols
    values = rng.standard_normal(rows * cols * layers, dtype=np.float32) * 0.02
    offsets = pa.array(np.arange(layers + 1, dtype=np.int64) * rows * cols)
    return pa.table({
        "layer_name": [f"layer.{i}.weight" for i in range(layers)],
        "weights": pa.LargeListArray.from_arrays(offsets, pa.array(values)),
        "shape": pa.array([[rows, cols]] * layers, pa.list_(pa.int64())),
    })


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "api.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sizes_mb = [4] if args.quick else [4, 40, 400]
    layer_counts = [1, 10] if args.quick else [1, 10, 50, 100]
    repeats = 3 if args.quick else 7
    threads_all = aq.simd_info()["hardware_threads"]
    record: dict = {"benchmark": "api", "cpu": cpu_model(), "simd_path": aq.simd_info()["active"],
                    "hardware_threads": threads_all, "quick": args.quick,
                    "versions": {"arrowquant": aq.__version__, "pyarrow": pa.__version__, "numpy": np.__version__,
                                 "python": platform.python_version()}}

    # Baseline: single-thread memory read (numpy's vectorised max, one pass).
    big = rng.standard_normal(max(sizes_mb) * 2**20 // 4, dtype=np.float32)
    record["memory_read_mweights_s"] = big.size / median_seconds(lambda: big.max(), repeats) / 1e6

    # The Arrow path: Table vs RecordBatch, share of wall time outside the kernels.
    arrow_rows = []
    q = aq.ArrowQuantV2(group_size=128)
    for mb in sizes_mb:
        for layers in layer_counts:
            table = layer_table(mb * 2**20 // 4, layers, rng)
            batch = table.to_batches()[0]
            numel = sum(len(batch.column("weights")[i].values) for i in range(batch.num_rows))
            kernel = []

            def run_table():
                q.quantize_arrow(table, 4)
                kernel.append(_core.last_kernel_seconds())

            t_table = median_seconds(run_table, repeats)
            k_table = statistics.median(kernel[1:] or kernel)
            t_batch = median_seconds(lambda: q.quantize_arrow_batch(batch, 4), repeats)
            arrow_rows.append({"size_mb": mb, "layers": layers, "weights": numel,
                               "table_ms": t_table * 1e3, "batch_ms": t_batch * 1e3,
                               "table_mweights_s": numel / t_table / 1e6, "batch_mweights_s": numel / t_batch / 1e6,
                               "kernel_ms": k_table * 1e3, "outside_kernel_share": max(0.0, 1 - k_table / t_table)})
    record["arrow"] = arrow_rows

    # The batch API: sequential quantize() calls vs one quantize_batch(), small layers.
    batch_rows = []
    for layers in ([1, 10] if args.quick else [1, 10, 50, 100]):
        arrays = {f"l{i}": rng.standard_normal((16, 64), dtype=np.float32) for i in range(layers)}
        t_seq = median_seconds(lambda: [q.quantize(a) for a in arrays.values()], repeats)
        t_batch = median_seconds(lambda: q.quantize_batch(arrays), repeats)
        batch_rows.append({"layers": layers, "sequential_ms": t_seq * 1e3, "batch_ms": t_batch * 1e3,
                           "sequential_us_per_layer": t_seq / layers * 1e6, "batch_us_per_layer": t_batch / layers * 1e6})
    record["batch_api"] = batch_rows

    # Thread scaling on the largest size.
    w = big.reshape(-1, 4096)
    scaling = []
    for threads in range(1, threads_all + 1):
        qt = aq.ArrowQuantV2(group_size=128, num_threads=threads)
        t = median_seconds(lambda: qt.quantize(w, 4), repeats)
        scaling.append({"threads": threads, "mweights_s": w.size / t / 1e6})
    record["thread_scaling"] = scaling

    # Peers on the same data: numpy RTN in our format, gguf's numpy Q4_0 / Q8_0.
    sample = w[: (4 * 2**20 // 4) // 4096]
    peers = {"arrowquant_rtn4_1thread": sample.size / median_seconds(
        lambda: aq.ArrowQuantV2(num_threads=1).quantize(sample, 4), repeats) / 1e6,
        "arrowquant_search4_1thread": sample.size / median_seconds(
        lambda: aq.ArrowQuantV2(num_threads=1).quantize(sample, 4, method="search"), repeats) / 1e6,
        "numpy_rtn4": sample.size / median_seconds(lambda: quantize_rtn(sample), repeats) / 1e6}
    try:
        import gguf
        from gguf import quants
        for name in ("Q4_0", "Q8_0"):
            qtype = getattr(gguf.GGMLQuantizationType, name)
            peers[f"gguf_numpy_{name}"] = sample.size / median_seconds(lambda: quants.quantize(sample, qtype), repeats) / 1e6
    except ImportError:
        peers["gguf"] = None
    record["peers_mweights_s"] = peers

    print(f"arrowquant {aq.__version__} on {record['cpu']}, SIMD {record['simd_path']}, {threads_all} threads")
    print(f"memory read: {record['memory_read_mweights_s']:.0f} M float32/s")
    print("size_MB layers  table_ms  batch_ms  table_Mw/s  outside_kernels")
    for r in arrow_rows:
        print(f"{r['size_mb']:>7} {r['layers']:>6} {r['table_ms']:>9.3f} {r['batch_ms']:>9.3f} {r['table_mweights_s']:>11.0f} "
              f"{100 * r['outside_kernel_share']:>14.1f}%")
    for r in batch_rows:
        print(f"batch API, {r['layers']:>3} layers: sequential {r['sequential_us_per_layer']:.1f} us/layer, "
              f"quantize_batch {r['batch_us_per_layer']:.1f} us/layer")
    for r in scaling:
        print(f"threads {r['threads']}: {r['mweights_s']:.0f} M weights/s")
    for k, v in peers.items():
        print(f"peer {k}: {v if v is None else round(v)} M weights/s")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
    os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
