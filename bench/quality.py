"""Quality benchmark (issue 6): RTN vs search, with a numpy HQQ reference, on 1024 x 4096 float32
matrices from N(0, 0.02^2) and 0.02 * Student-t(4), at 2, 4, 8 bits and group sizes 32..256.

    python bench/quality.py [--quick] [--json bench/results/quality.json]

Per configuration: relative RMSE (RMSE / RMS(x)), SQNR in dB, bits per weight including the
float32 scale and zero point of every group, and M weights/s on one thread (median of 3).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import arrowquant as aq  # noqa: E402
from hqq_reference import quantize_hqq  # noqa: E402


def metrics(w: np.ndarray, w_hat: np.ndarray) -> tuple[float, float]:
    x, d = w.astype(np.float64), w.astype(np.float64) - w_hat.astype(np.float64)
    err, energy = float(np.sum(d * d)), float(np.sum(x * x))
    return (err / energy) ** 0.5, 10 * np.log10(energy / err)


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a 128 x 4096 slice, one repeat, no HQQ (smoke test)")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "quality.json"))
    args = parser.parse_args()
    rows = 128 if args.quick else 1024
    repeats = 1 if args.quick else 3
    rng = np.random.default_rng(0)
    data = {
        "normal": (rng.standard_normal((rows, 4096)) * 0.02).astype(np.float32),
        "student_t4": (rng.standard_t(4, (rows, 4096)) * 0.02).astype(np.float32),
    }
    q = aq.ArrowQuantV2(num_threads=1)
    results = []
    print(f"arrowquant {aq.__version__}, SIMD path {aq.simd_info()['active']}, {rows} x 4096 float32, one thread")
    print("| data | bits | group | bits/weight | RTN rel. RMSE | search rel. RMSE | gain | HQQ rel. RMSE | "
          "RTN SQNR dB | search SQNR dB | RTN Mw/s | search Mw/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, w in data.items():
        for bits in (2, 4, 8):
            for group in (32, 64, 128, 256):
                row = {"data": name, "bits": bits, "group_size": group,
                       "bits_per_weight": bits + 64 / group}
                for method in ("rtn", "search"):
                    qt, seconds = timed(lambda: q.quantize(w, bits, group_size=group, method=method), repeats)
                    rel, sqnr = metrics(w, qt.dequantize())
                    row[method] = {"relative_rmse": rel, "sqnr_db": sqnr, "mweights_s": w.size / seconds / 1e6}
                    row["bits_per_weight"] = 8 * qt.nbytes / w.size
                row["gain"] = 1 - row["search"]["relative_rmse"] / row["rtn"]["relative_rmse"]
                hqq = "-"
                if not args.quick and bits < 8:
                    w_hat, seconds = timed(lambda: quantize_hqq(w, bits, group), 1)
                    rel, sqnr = metrics(w, w_hat)
                    row["hqq"] = {"relative_rmse": rel, "sqnr_db": sqnr, "mweights_s": w.size / seconds / 1e6}
                    hqq = f"{rel:.4f}"
                results.append(row)
                print(f"| {name} | {bits} | {group} | {row['bits_per_weight']:.3f} | {row['rtn']['relative_rmse']:.4f} | "
                      f"{row['search']['relative_rmse']:.4f} | {100 * row['gain']:.1f}% | {hqq} | "
                      f"{row['rtn']['sqnr_db']:.2f} | {row['search']['sqnr_db']:.2f} | "
                      f"{row['rtn']['mweights_s']:.0f} | {row['search']['mweights_s']:.0f} |")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json + ".tmp", "w") as f:
        json.dump({"benchmark": "quality", "rows": rows, "quick": args.quick, "simd_path": aq.simd_info()["active"],
                   "results": results}, f, indent=2)
    os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
