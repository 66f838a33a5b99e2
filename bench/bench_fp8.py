"""FP8 sources against BF16 ones: the same Flux-like weights saved as BF16 and as a ComfyUI
scaled_fp8 checkpoint (E4M3FN codes + one scale_weight per tensor), each converted to GGUF Q4_K_M
(method search and ggml) and quantized to .aq (the CLI's default settings), every run in a fresh
subprocess. Reports weights per second, the FP8 / BF16 throughput ratio (target >= 0.95) and the
peak RSS above the process's baseline next to the largest tensor.

    python bench/bench_fp8.py [--quick] [--json out.json]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import ml_dtypes
import numpy as np

from bench_common import bench_args, PEAK_RSS_PRELUDE, cpu_model, emit

RUN = """
import json, sys, time
import arrowquant as aq, arrowquant.gguf as ag
""" + PEAK_RSS_PRELUDE + """t0 = time.perf_counter()
if sys.argv[3] == "aq":
    aq.quantize_diffusion_model(sys.argv[1], sys.argv[2], overwrite=True)
else:
    ag.convert(sys.argv[1], sys.argv[2], type="Q4_K_M", overwrite=True, with_stats=False, method=sys.argv[3])
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_rss_kb": status("VmHWM:"), "baseline_rss_kb": before}))
"""
SHAPES = (("img_attn.qkv", (3 * 1024, 3072)), ("img_attn.proj", (3072, 3072)), ("img_mlp.0", (4096, 3072)),
          ("img_mlp.2", (3072, 4096)))


def make_checkpoints(folder: Path, layers: int) -> tuple[Path, Path, int, int]:
    """(BF16 path, FP8 path, weights, largest FP8 tensor bytes)."""
    from arrowquant.safetensors_io import write_safetensors
    rng = np.random.default_rng(0)
    bf16, fp8 = {}, {}
    for i in range(layers):
        for short, shape in SHAPES:
            name = f"double_blocks.{i}.{short}.weight"
            w = 0.02 * rng.standard_normal(shape, dtype=np.float32)
            scale = np.float32(np.abs(w).max() / 448)
            codes = (w / scale).astype(ml_dtypes.float8_e4m3fn)
            fp8[name] = ("F8_E4M3", codes)
            fp8[f"double_blocks.{i}.{short}.scale_weight"] = ("F32", np.array([scale], np.float32))
            bf16[name] = ("BF16", (codes.astype(np.float32) * scale).astype(ml_dtypes.bfloat16))
    fp8["scaled_fp8"] = ("F8_E4M3", np.zeros(0, ml_dtypes.float8_e4m3fn))
    paths = []
    for label, tensors in (("bf16", bf16), ("fp8", fp8)):
        path = folder / f"flux-{label}.safetensors"
        items = list(tensors.items())
        write_safetensors(path, [(n, d, a.shape, a.nbytes) for n, (d, a) in items],
                          (a.reshape(-1).view(np.uint8) for _, (_, a) in items))
        paths.append(path)
    weights = layers * sum(int(np.prod(s)) for _, s in SHAPES)
    return paths[0], paths[1], weights, max(int(np.prod(s)) for _, s in SHAPES)


def main() -> None:
    args = bench_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        bf16, fp8, weights, largest = make_checkpoints(Path(tmp), 1 if args.quick else 3)
        rows = {}
        for route in ("search", "ggml", "aq"):
            for label, src in (("bf16", bf16), ("fp8", fp8)):
                out = Path(tmp) / f"out-{label}.{'aq' if route == 'aq' else 'gguf'}"
                runs = []
                for _ in range(1 if args.quick else 5):
                    r = subprocess.run([sys.executable, "-c", RUN, str(src), str(out), route], capture_output=True,
                                       text=True, check=True)
                    runs.append(json.loads(r.stdout))
                best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
                rows[f"{route}_{label}"] = {
                    "seconds": best["seconds"], "m_weights_s": weights / best["seconds"] / 1e6,
                    "peak_rss_above_baseline_mb": (best["peak_rss_kb"] - best["baseline_rss_kb"]) / 1024}
            rows[f"{route}_fp8_over_bf16"] = rows[f"{route}_fp8"]["m_weights_s"] / rows[f"{route}_bf16"]["m_weights_s"]
        emit({"cpu": cpu_model(), "cores": os.cpu_count(), "weights": weights, "largest_fp8_tensor_mb": largest / 1e6,
              **rows}, args.json)


if __name__ == "__main__":
    main()
