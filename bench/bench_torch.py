"""arrowquant.torch on the CPU: decoding one layer (the kernels and the torch-operations decoder,
one thread) and a small UNet's forward pass quantized against float32, in the same run.

    python bench/bench_torch.py [--quick] [--json out.json]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

import arrowquant as aq
import arrowquant.torch as at
from arrowquant.torch.decode import decode_with_torch
from bench_common import bench_args, emit, median_seconds


def main() -> None:
    args = bench_args(__doc__)
    torch.set_num_threads(1)
    aq_threads = aq.ArrowQuantV2(num_threads=1)
    rows, cols = (512, 1024) if args.quick else (4096, 4096)
    w = (0.02 * np.random.default_rng(0).standard_normal((rows, cols))).astype(np.float32)
    q = aq_threads.quantize(w, 4, group_size=128)
    packed, scales, zeros = (torch.from_numpy(np.array(a)) for a in (q.quantized_data, q.scales, q.zero_points))
    n = w.size
    t_kernel = median_seconds(lambda: at.decode_weight(packed, scales, zeros, w.shape, 4, 128), 5)
    # what a no-grad forward pass does: decode into the thread's reused scratch buffer
    from arrowquant.torch.decode import scratch_float32
    t_reused = median_seconds(lambda: at.decode_weight(packed, scales, zeros, w.shape, 4, 128,
                                                       out=scratch_float32(w.size)), 5)
    from arrowquant.tensor import dequantize_tensors
    scratch = scratch_float32(w.size).numpy()
    t_one_thread = median_seconds(lambda: dequantize_tensors([q], ["w"], 1, outputs=[scratch]), 5)
    kq = aq.ArrowQuantV2(num_threads=1, scheme="kquant").quantize(w, 4)
    kq_packed, empty = torch.from_numpy(np.array(kq.quantized_data)), torch.zeros(0)
    t_kquant = median_seconds(lambda: at.decode_weight(kq_packed, empty, empty, w.shape, 4, 256, scheme="kquant",
                                                       rotation=kq.rotation, out=scratch_float32(w.size)), 5)
    t_torch = median_seconds(lambda: decode_with_torch(packed, scales, zeros, w.shape, 4, 128), 3)
    result = {"layer": [rows, cols], "decode_kernels_mweights_s": n / t_kernel / 1e6,
              "decode_kernels_reused_buffer_mweights_s": n / t_reused / 1e6,
              "decode_kernels_reused_buffer_one_thread_mweights_s": n / t_one_thread / 1e6,
              "decode_kquant_rotated_reused_buffer_mweights_s": n / t_kquant / 1e6,
              "decode_torch_ops_mweights_s": n / t_torch / 1e6}
    try:
        import diffusers
    except ImportError:
        diffusers = None
    if diffusers is not None:
        torch.manual_seed(0)
        unet = diffusers.UNet2DConditionModel(
            sample_size=32, block_out_channels=(64, 128) if args.quick else (128, 256), layers_per_block=1,
            cross_attention_dim=64, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8, norm_num_groups=16).eval()
        with tempfile.TemporaryDirectory() as tmp:
            unet.save_pretrained(Path(tmp) / "unet")
            aq.quantize_diffusion_model(Path(tmp) / "unet", Path(tmp) / "q", aq.DiffusionQuantConfig.from_profile("local"))
            with torch.device("meta"):
                quantized = diffusers.UNet2DConditionModel.from_config(unet.config)
            at.load_quantized(quantized, Path(tmp) / "q" / "diffusion_pytorch_model.aq")
            result.update(load_memory(Path(tmp) / "q", unet))
        quantized.eval()
        g = torch.Generator().manual_seed(1)
        x, t, text = torch.randn(1, 4, 32, 32, generator=g), torch.tensor([10]), torch.randn(1, 7, 64, generator=g)
        size = lambda m: sum(p.numel() * p.element_size() for p in list(m.parameters()) + list(m.buffers()))  # noqa: E731
        with torch.no_grad():
            t_float = median_seconds(lambda: unet(x, t, text), 3 if args.quick else 7)
            t_quant = median_seconds(lambda: quantized(x, t, text), 3 if args.quick else 7)
        result.update({"unet_float_ms": t_float * 1e3, "unet_quantized_ms": t_quant * 1e3,
                       "unet_forward_ratio": t_quant / t_float, "unet_bytes_ratio": size(quantized) / size(unet)})
    emit(result, args.json)


def load_memory(folder: Path, unet) -> dict:
    """Peak RSS that arrowquant.diffusers.load_model adds (a fresh process, libraries warmed up on
    the same folder first, then the peak mark reset), against the issue's bound: the quantized
    file + the largest layer's float32 weight."""
    import subprocess
    import sys
    import textwrap
    script = textwrap.dedent(f"""
        import torch
        import arrowquant.diffusers as ad

        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) / 2**20

        ad.load_model({str(folder)!r})  # warm-up: imports and first-use initialisation
        open("/proc/self/clear_refs", "w").write("5")
        before = status("VmRSS")
        model = ad.load_model({str(folder)!r})
        print(status("VmHWM") - before)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    aq_bytes = sum(p.stat().st_size for p in folder.glob("*.aq"))
    largest = max(p.numel() * 4 for p in unet.parameters())
    peak = float(done.stdout.split()[-1])
    return {"load_model_peak_gb": peak, "load_bound_gb": (aq_bytes + largest) / 2**30,
            "aq_file_gb": aq_bytes / 2**30, "largest_layer_float_gb": largest / 2**30,
            "float_model_gb": sum(p.numel() * 4 for p in unet.parameters()) / 2**30}


if __name__ == "__main__":
    main()
