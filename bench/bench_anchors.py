"""The strongest calibration-free quantizers side by side with arrowquant's best settings, in the
same run, on the same data: relative RMSE against bits per weight on Gaussian, Student-t(4) and
MiniLM-L6's real weights, with the 2^-R floor no code of R bits per weight can beat on Gaussian
data (issue 24's table).

Anchors: ik_llama.cpp's IQ*_K / KS / KT types (bench/ik/build.sh builds its quantizers from the
ik-llama-cpp-python sdist; each run with no importance matrix and with an all-ones one, the better
kept), mainline ggml's k-quants (tests/ggml/build.sh), and HIGGS (transformers' published
Gaussian-MSE-optimal 2-D grids after a 1024-point Hadamard rotation and per-block RMS scaling,
reimplemented here in numpy). arrowquant: format version 2's kquant scheme with `search`.

    python bench/bench_anchors.py [--quick] [--json bench/results/anchors.json]
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import arrowquant as aq  # noqa: E402
from bench_common import cpu_model, emit  # noqa: E402
from bench_format_v2 import Ggml, minilm, rel_rmse  # noqa: E402

ROOT = Path(__file__).parent.parent
IK_LIB = ROOT / "build" / "ik-ref" / "libik-quants.so"
# ik_llama.cpp's type ids (its ggml.h).
IK_TYPES = {"IQ2_KT": 153, "IQ2_KL": 157, "IQ3_KS": 156, "IQ3_K": 138, "IQ4_KT": 155, "IQ4_KS": 144,
            "IQ4_K": 139, "IQ5_KS": 152, "IQ5_K": 140, "IQ6_K": 141}
MAINLINE = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0"]
OURS = [2, 3, 4, 5, 6, 8]  # kquant bit widths


def rows_of(x: np.ndarray) -> np.ndarray:
    """The flattened tensor as rows of 4096 values (or the longest multiple of 256 that divides it)."""
    flat = np.ascontiguousarray(x.reshape(-1), np.float32)
    for width in (4096, 2048, 1024, 512, 256):
        if flat.size % width == 0:
            return flat.reshape(-1, width)
    raise ValueError(f"{flat.size} values are not whole 256-blocks")


class Ik:
    def __init__(self, path: Path) -> None:
        self.lib = ctypes.CDLL(str(path))
        self.lib.ik_row_size.restype = ctypes.c_size_t
        self.lib.ik_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        self.lib.ik_quantize.restype = ctypes.c_size_t
        self.lib.ik_quantize.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                         ctypes.c_void_p]
        self.lib.ik_dequantize.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                           ctypes.c_int64]

    def codec(self, type_id: int, ones: bool):
        def run(x: np.ndarray) -> tuple[np.ndarray, float]:
            rows = rows_of(x)
            n, width = rows.shape
            out = np.zeros(n * self.lib.ik_row_size(type_id, width), np.uint8)
            weights = np.ones(width, np.float32) if ones else None
            self.lib.ik_quantize(type_id, rows.ctypes.data, out.ctypes.data, n, width,
                                 weights.ctypes.data if ones else None)
            back = np.zeros_like(rows)
            self.lib.ik_dequantize(type_id, out.ctypes.data, back.ctypes.data, n, width)
            return back.reshape(x.shape), 8 * out.size / rows.size
        return run


def higgs_codec(bits: int, p: int = 2, hadamard: int = 1024, group: int = 256):
    """HIGGS as transformers' quantize_with_higgs computes it: rows padded to the Hadamard size,
    each block of 1024 scaled by its norm and rotated, pairs of values coded by the nearest point
    of the 2-D grid (2^(2 bits) points); one fp16 scale per group of 256 stored."""
    from transformers.integrations.higgs import get_higgs_grid
    grid = get_higgs_grid(p, 2 ** (p * bits)).numpy().astype(np.float64)
    norms = (grid ** 2).sum(axis=1)
    h = np.array([[1.0]])
    while h.shape[0] < hadamard:
        h = np.block([[h, h], [h, -h]])
    h /= math.sqrt(hadamard)

    def run(x: np.ndarray) -> tuple[np.ndarray, float]:
        blocks = x.reshape(-1, hadamard).astype(np.float64)
        scales = np.linalg.norm(blocks, axis=1, keepdims=True)
        scales = np.where(scales == 0, 1.0, scales)
        rotated = blocks @ h / scales  # unit-norm blocks; each coordinate about N(0, 1 / 1024)
        pairs = (rotated * math.sqrt(hadamard)).reshape(-1, p)
        codes = np.empty(len(pairs), np.int64)
        for start in range(0, len(pairs), 1 << 16):
            chunk = pairs[start:start + (1 << 16)]
            codes[start:start + len(chunk)] = np.argmax(2 * chunk @ grid.T - norms, axis=1)
        stored_scales = (scales / math.sqrt(hadamard)).astype(np.float16).astype(np.float64) * math.sqrt(hadamard)
        decoded = grid[codes].reshape(blocks.shape) / math.sqrt(hadamard) * stored_scales @ h.T
        return decoded.reshape(x.shape).astype(np.float32), bits + 16 / group
    return run


def ours_codec(bits: int):
    q = aq.ArrowQuantV2(scheme="kquant", rotate=True, method="search", num_threads=1)

    def run(x: np.ndarray) -> tuple[np.ndarray, float]:
        t = q.quantize(np.ascontiguousarray(x, np.float32), bits)
        return t.dequantize().reshape(x.shape), t.bits_per_weight
    return run


def mainline_codec(ggml: Ggml, name: str):
    plain, ones = ggml.codec(name, False), ggml.codec(name, True)
    bpw = {"Q2_K": 2.625, "Q3_K": 3.4375, "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625, "Q8_0": 8.5}[name]

    def run(x: np.ndarray, use_ones: bool) -> tuple[np.ndarray, float]:
        return (ones if use_ones else plain)(x).reshape(x.shape), bpw
    return run, ones is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small matrix, no MiniLM (CI smoke run)")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    shape = (64, 1024) if args.quick else (1024, 4096)
    rng = np.random.default_rng(0)
    data = {"gaussian": [(0.02 * rng.standard_normal(shape)).astype(np.float32)],
            "student_t4": [(0.02 * rng.standard_t(4, shape)).astype(np.float32)]}
    real = None if args.quick else minilm()
    if real is not None:
        data["minilm"] = list(real[1].values())

    def measure(codec) -> tuple[dict[str, float], float]:
        errors, bpw = {}, 0.0
        for dist, tensors in data.items():
            results = [codec(t) for t in tensors]
            errors[dist] = float(np.mean([rel_rmse(t, y) for t, (y, _) in zip(tensors, results)]))
            bpw = results[0][1]
        return errors, bpw

    rows = []
    if IK_LIB.is_file():
        ik = Ik(IK_LIB)
        for name, type_id in IK_TYPES.items():
            plain, plain_bpw = measure(ik.codec(type_id, False))
            ones, _ = measure(ik.codec(type_id, True))
            rows.append({"family": "ik_llama.cpp", "setting": name, "bpw": plain_bpw,
                         "errors": {d: min(plain[d], ones[d]) for d in plain}})
    else:
        print(f"(ik_llama.cpp anchors skipped: run bench/ik/build.sh to build {IK_LIB})", file=sys.stderr)
    ggml = Ggml(__import__("bench_common").load_ggml())
    for name in MAINLINE:
        run, has_ones = mainline_codec(ggml, name)
        plain, bpw = measure(lambda x: run(x, False))
        best = plain if not has_ones else {d: min(plain[d], e) for d, e in measure(lambda x: run(x, True))[0].items()}
        rows.append({"family": "ggml", "setting": name, "bpw": bpw, "errors": best})
    for bits in (2, 3, 4):
        errors, bpw = measure(higgs_codec(bits))
        rows.append({"family": "HIGGS p=2", "setting": f"{bits}-bit", "bpw": bpw, "errors": errors})
    for bits in OURS:
        errors, bpw = measure(ours_codec(bits))
        rows.append({"family": "arrowquant", "setting": f"kquant {bits}-bit search", "bpw": bpw, "errors": errors})
    rows.sort(key=lambda r: r["bpw"])
    dists = list(data)
    print(f"| bpw | quantizer | {' | '.join(dists)} | 2^-R floor |")
    print("|---|---|" + "---|" * (len(dists) + 1))
    for r in rows:
        print(f"| {r['bpw']:.3f} | {r['family']} {r['setting']} | "
              + " | ".join(f"{r['errors'][d]:.4f}" for d in dists) + f" | {2 ** -r['bpw']:.4f} |")
    emit({"machine": cpu_model(), "shape": list(shape), "data": dists, "rows": rows}, args.json)


if __name__ == "__main__":
    main()
