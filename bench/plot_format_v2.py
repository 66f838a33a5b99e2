"""The plot of error against bits per weight: every ggml type (its reference quantizer, and with an
all-ones importance matrix where ggml has one) and arrowquant's format-v2 settings, per data set,
from the results bench_format_v2.py wrote.

    python bench/plot_format_v2.py [bench/results/format_v2.json] [bench/results/error_vs_bits.png]
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    source = sys.argv[1] if len(sys.argv) > 1 else "bench/results/format_v2.json"
    target = sys.argv[2] if len(sys.argv) > 2 else "bench/results/error_vs_bits.png"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return 0
    from arrowquant.schemes import kquant_block_bits_per_weight
    with open(source) as f:
        result = json.load(f)
    datasets = [d for d in ("gaussian", "student_t4", "minilm") if any(e["data"] == d for e in result["errors"])]
    titles = {"gaussian": "Gaussian", "student_t4": "Student-t(4)", "minilm": "MiniLM-L6 weights"}
    fig, grid = plt.subplots(2, len(datasets), figsize=(4.2 * len(datasets), 6.6), dpi=110, sharey="row",
                             squeeze=False, gridspec_kw={"height_ratios": [3, 2]})
    axes = grid[0]
    for ax, ratio_ax, data in zip(grid[0], grid[1], datasets):
        rows = [e for e in result["errors"] if e["data"] == data and "kquant_bits" in e]
        for e in rows:
            ax.scatter(e["ggml_bits_per_weight"], e["ggml"], marker="o", color="tab:grey", zorder=3)
            ax.annotate(e["size"], (e["ggml_bits_per_weight"], e["ggml"]), fontsize=7, color="tab:grey",
                        xytext=(4, 3), textcoords="offset points")
            if "ggml_imatrix_ones" in e:
                ax.scatter(e["ggml_bits_per_weight"], e["ggml_imatrix_ones"], marker="^", color="tab:orange", zorder=3)
        ours = {}
        for e in rows:  # one point per kquant width (IQ4_XS and Q4_K rows share the 4-bit setting)
            ours[e["kquant_bits"]] = e["kquant_best"]
        bits = sorted(ours)
        ax.plot([kquant_block_bits_per_weight(b) for b in bits], [ours[b] for b in bits], marker="s",
                color="tab:blue", label="arrowquant v2 kquant (rotated, search)", zorder=4)
        affine = [e for e in result["errors"] if e["data"] == data and "affine" in e]
        for e in affine:
            ax.scatter(e["ggml_bits_per_weight"], e["affine"], marker="x", color="tab:red", s=50, zorder=4)
        ax.scatter([], [], marker="o", color="tab:grey", label="ggml reference quantizer")
        ax.scatter([], [], marker="^", color="tab:orange", label="ggml, all-ones importance")
        if affine:
            ax.scatter([], [], marker="x", color="tab:red", label="arrowquant v1 affine 4-bit g128")
        ax.set_yscale("log")
        ax.set_title(titles[data], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        # Below: our error over the best of ggml's two quantizers at the same size (the target's
        # measure; equal-size rows only, so IQ4_XS's 4.25 bits are left out).
        same_size = [e for e in rows if abs(kquant_block_bits_per_weight(e["kquant_bits"]) - e["ggml_bits_per_weight"]) < 1e-9]
        ratio_ax.plot([e["ggml_bits_per_weight"] for e in same_size], [e["kquant_best"] / e["best_ggml"] for e in same_size],
                      marker="s", color="tab:blue")
        ratio_ax.axhline(1.0, color="tab:grey", linewidth=1)
        ratio_ax.axhline(0.9, color="tab:grey", linewidth=1, linestyle=":")
        ratio_ax.set_xlabel("bits per weight")
        ratio_ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("relative RMSE")
    grid[1][0].set_ylabel("arrowquant / best ggml\n(dotted: the 0.9 target)")
    axes[-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Error against size, {result['matrix'][0]}x{result['matrix'][1]} matrices and real weights "
                 f"({result['cpu']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
