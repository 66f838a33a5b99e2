"""A built-in example: quantize a small sample of UNet-like layers and print what happened.

Run with ``python -m arrowquant.demo`` (``make demo``).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pyarrow as pa

from .quantizer import ArrowQuantV2

# Names and shapes in the style of a diffusers UNet2DConditionModel (scaled down).
SAMPLE_LAYERS = [
    ("conv_in.weight", (64, 4, 3, 3)),
    ("time_embedding.linear_1.weight", (256, 64)),
    ("down_blocks.0.resnets.0.conv1.weight", (64, 64, 3, 3)),
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", (64, 64)),
    ("down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight", (512, 64)),
    ("mid_block.resnets.0.conv2.weight", (128, 128, 3, 3)),
    ("up_blocks.1.resnets.0.norm1.weight", (128,)),
    ("conv_out.weight", (4, 64, 3, 3)),
]


def sample_table(seed: int = 0) -> pa.Table:
    """Heavy-tailed (Student-t, 4 degrees of freedom) weights scaled like trained layers."""
    rng = np.random.default_rng(seed)
    names, weights, shapes = [], [], []
    for name, shape in SAMPLE_LAYERS:
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
        w = (rng.standard_t(4, size=shape) / math.sqrt(2 * fan_in)).astype(np.float32)
        names.append(name)
        weights.append(w.reshape(-1))
        shapes.append(list(shape))
    return pa.table({"layer_name": names, "weights": pa.array(weights, pa.list_(pa.float32())),
                     "shape": pa.array(shapes, pa.list_(pa.int64()))})


def report_rows(table: pa.Table, quantized: pa.Table, restored: pa.Table) -> list[dict]:
    rows = []
    for i in range(table.num_rows):
        original = np.asarray(table.column("weights")[i].values, np.float32)
        back = np.asarray(restored.column("weights")[i].values, np.float32)
        packed = len(quantized.column("quantized_data")[i].as_py())
        params = 4 * (len(quantized.column("scales")[i].values) + len(quantized.column("zero_points")[i].values))
        rows.append({
            "name": table.column("layer_name")[i].as_py(),
            "shape": "x".join(map(str, table.column("shape")[i].as_py())),
            "bits": quantized.column("bit_width")[i].as_py(),
            "bytes_before": original.nbytes,
            "bytes_after": packed + params,
            "max_error": float(np.abs(original - back).max()) if original.size else 0.0,
        })
    return rows


def format_report(rows: list[dict]) -> str:
    header = f"{'layer':<70} {'shape':>12} {'bits':>4} {'bytes before':>13} {'bytes after':>12} {'max error':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['name']:<70} {r['shape']:>12} {r['bits']:>4} {r['bytes_before']:>13,} "
                     f"{r['bytes_after']:>12,} {r['max_error']:>10.2e}")
    before = sum(r["bytes_before"] for r in rows)
    after = sum(r["bytes_after"] for r in rows)
    lines.append("-" * len(header))
    lines.append(f"{'total':<70} {'':>12} {'':>4} {before:>13,} {after:>12,}   ({before / after:.1f}x smaller)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Quantize a built-in sample of UNet-style layers.")
    parser.add_argument("--bits", type=int, default=4, choices=(2, 4, 8))
    parser.add_argument("--group-size", type=int, default=128)
    args = parser.parse_args(argv)
    table = sample_table()
    quantizer = ArrowQuantV2(mode="diffusion", group_size=args.group_size)
    quantized = quantizer.quantize_arrow(table, bit_width=args.bits)
    restored = quantizer.dequantize_arrow(quantized)
    print(f"arrowquant demo: {table.num_rows} layers, {args.bits}-bit, group size {args.group_size}\n")
    print(format_report(report_rows(table, quantized, restored)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
