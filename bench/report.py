"""Turns the JSON written by the benchmarks into the results page (markdown) and a plot (PNG).

    python bench/report.py [--results bench/results] [--out bench/results]

Every target of the benchmark issue is listed with its measured value; a missed target says by
how much. Nothing is left out because it looks bad.
"""

from __future__ import annotations

import argparse
import json
import os


def load(directory: str, name: str):
    path = os.path.join(directory, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def verdict(value: float, op: str, goal: float) -> str:
    met = value >= goal if op == ">=" else value <= goal
    if met:
        return "met"
    miss = (goal - value) / goal if op == ">=" else (value - goal) / goal
    return f"**missed by {100 * miss:.0f}%**"


def kernel_rows(kernels) -> list[str]:
    """Google Benchmark medians for the headline configuration, per SIMD path."""
    if not kernels:
        return []
    medians = {}
    for b in kernels["benchmarks"]:
        name = b.get("run_name", b["name"])
        if b.get("aggregate_name", "median") == "median":
            medians[name] = b
    baseline = medians.get("baseline/memcpy", {}).get("bytes_per_second")
    rows = ["| kernel (1 thread, 1 M weights) | path | M weights/s | GB/s read | vs memcpy |", "|---|---|---|---|---|"]
    for family in ("quantize_rtn", "quantize_search", "dequantize", "min_max", "pack", "unpack"):
        for path in ("scalar", "avx2", "avx512"):
            key = {"quantize_rtn": f"{family}/{path}/b4/g128/f32", "quantize_search": f"{family}/{path}/b4/g128/f32",
                   "dequantize": f"{family}/{path}/b4/g128", "min_max": f"{family}/{path}",
                   "pack": f"{family}/{path}/b4", "unpack": f"{family}/{path}/b4"}[family]
            b = medians.get(key)
            if b is None:
                continue
            ratio = f"{b['bytes_per_second'] / baseline:.2f}x" if baseline else "-"
            rows.append(f"| {key} | {path} | {b['items_per_second'] / 1e6:,.0f} | {b['bytes_per_second'] / 1e9:.1f} | {ratio} |")
    for key in ("baseline/memcpy", "baseline/streaming_read"):
        if key in medians:
            b = medians[key]
            rows.append(f"| {key} | - | {b['items_per_second'] / 1e6:,.0f} | {b['bytes_per_second'] / 1e9:.1f} | - |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    here = os.path.join(os.path.dirname(__file__), "results")
    parser.add_argument("--results", default=here)
    parser.add_argument("--out", default=here)
    args = parser.parse_args()
    engine, api, quality = load(args.results, "engine"), load(args.results, "api"), load(args.results, "quality")
    checkpoint, kernels = load(args.results, "checkpoint"), load(args.results, "kernels")
    startup = load(args.results, "startup")
    lines = ["# arrowquant benchmark results", ""]
    if api:
        lines += [f"Machine: {api['cpu']}, {api['hardware_threads']} hardware threads, SIMD path `{api['simd_path']}`; "
                  f"versions {api['versions']}.", ""]

    targets = []
    if engine:
        r = engine["results"]
        targets += [("RTN 4-bit g128 quantize, 1 thread (M weights/s)", r["rtn4_g128_1thread_mweights_s"], ">=", 2000),
                    ("dequantize 4-bit, 1 thread (M weights/s)", r["dequant4_g128_1thread_mweights_s"], ">=", 3000),
                    ("4 MB tensor through quantize_arrow (ms)", r["e2e_4mb_tensor_ms"], "<=", 1.0),
                    ("100 layers of 1,000 weights, one call (ms)", r["e2e_100x1000_layers_ms"], "<=", 0.5)]
    if api:
        shares = [a for a in api["arrow"] if a["size_mb"] >= 4 and a["layers"] == 1]
        for a in shares:
            targets.append((f"share of time outside the kernels, {a['size_mb']} MB, 1 layer (%)",
                            100 * a["outside_kernel_share"], "<=", 5.0))
        small = [b for b in api["batch_api"] if b["layers"] == max(x["layers"] for x in api["batch_api"])]
        if small:
            targets.append((f"batch API overhead per layer, {small[0]['layers']} small layers (us)",
                            small[0]["batch_us_per_layer"], "<=", 20.0))
        scaling = api["thread_scaling"]
        if len(scaling) >= 2:
            targets.append((f"{scaling[-1]['threads']} threads vs 1 on the largest input (x)",
                            scaling[-1]["mweights_s"] / scaling[0]["mweights_s"], ">=", 1.8))
    if startup:
        help_s, base = startup["seconds"]["arrowquant --help"], startup["seconds"]["python -c pass"]
        targets.append((f"`arrowquant --help` wall time (s; `python -c pass` {base:.3f} s in the same run)", help_s, "<=",
                        startup["target_help_seconds"]))
    if targets:
        lines += ["## Targets", "", "| measure | result | target | verdict |", "|---|---|---|---|"]
        lines += [f"| {name} | {value:,.3f} | {op} {goal:g} | {verdict(value, op, goal)} |" for name, value, op, goal in targets]
        lines.append("")
    if api:
        lines += ["## The Arrow path (all cores)", "",
                  "| size MB | layers | quantize_arrow (Table) ms | quantize_arrow_batch ms | M weights/s | outside kernels |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {a['size_mb']} | {a['layers']} | {a['table_ms']:.3f} | {a['batch_ms']:.3f} | {a['table_mweights_s']:,.0f} | "
                  f"{100 * a['outside_kernel_share']:.1f}% |" for a in api["arrow"]]
        lines += ["", "## Batch API (layers of 1,024 weights)", "",
                  "| layers | sequential quantize() us/layer | quantize_batch() us/layer |", "|---|---|---|"]
        lines += [f"| {b['layers']} | {b['sequential_us_per_layer']:.1f} | {b['batch_us_per_layer']:.1f} |" for b in api["batch_api"]]
        lines += ["", "## Thread scaling (largest size, 4-bit RTN)", "", "| threads | M weights/s |", "|---|---|"]
        lines += [f"| {s['threads']} | {s['mweights_s']:,.0f} |" for s in api["thread_scaling"]]
        lines += ["", "## Peers on the same data (1 thread, 4 MB of float32)", "", "| quantizer | M weights/s |", "|---|---|"]
        lines += [f"| {k} | {v:,.0f} |" for k, v in api["peers_mweights_s"].items() if v is not None]
        lines += [f"| memory read (numpy max) | {api['memory_read_mweights_s']:,.0f} |", ""]
    if kernels:
        lines += ["## Kernels (Google Benchmark, medians of 3)", ""] + kernel_rows(kernels) + [""]
    if quality:
        lines += ["## Quality (bench/quality.py)", "",
                  "| data | bits | group | RTN rel. RMSE | search rel. RMSE | gain | search Mw/s |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {q['data']} | {q['bits']} | {q['group_size']} | {q['rtn']['relative_rmse']:.4f} | "
                  f"{q['search']['relative_rmse']:.4f} | {100 * q['gain']:.1f}% | {q['search']['mweights_s']:.0f} |"
                  for q in quality["results"]]
        lines.append("")
    if checkpoint:
        c = checkpoint["results"]
        lines += ["## Checkpoint (bench/bench_checkpoint.py)", "",
                  f"{c['checkpoint_mb']:.0f} MB safetensors, largest tensor {c['largest_tensor_mb']:.0f} MB; page-cache read "
                  f"{c['page_cache_read_mb_s']:,.0f} MB/s in the same run.", ""]
        for method in ("rtn", "search"):
            ratio = c[f"{method}_speed_vs_page_cache_read"]
            peak = c[f"{method}_peak_rss_over_baseline_mb"]
            lines.append(f"- {method}: {c[f'{method}_quantize_to_aq_mb_s']:,.0f} MB/s (ratio {ratio:.2f}, target 0.5: "
                         f"{verdict(ratio, '>=', 0.5)}); peak RSS over baseline {peak:.0f} MB (budget "
                         f"{c['rss_budget_mb']:.0f} MB: {verdict(peak, '<=', c['rss_budget_mb'])})")
        lines.append("")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if api:
        plot(api, os.path.join(args.out, "throughput.png"))
    print("\n".join(lines))
    return 0


def plot(api, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for layers in sorted({a["layers"] for a in api["arrow"]}):
        rows = sorted((a for a in api["arrow"] if a["layers"] == layers), key=lambda a: a["size_mb"])
        ax.plot([a["size_mb"] for a in rows], [a["table_mweights_s"] for a in rows], marker="o",
                label=f"quantize_arrow, {layers} layer{'s' if layers > 1 else ''}, {api['hardware_threads']} threads")
    largest = max(a["size_mb"] for a in api["arrow"])
    for s in api["thread_scaling"]:
        ax.scatter([largest], [s["mweights_s"]], marker="x", s=60, zorder=5,
                   label=f"quantize() 4-bit, {s['threads']} thread{'s' if s['threads'] > 1 else ''}")
    for name, value in api["peers_mweights_s"].items():
        if value and not name.startswith("arrowquant"):
            ax.axhline(value, linestyle=":", linewidth=1, color="grey")
            ax.text(min(a["size_mb"] for a in api["arrow"]), value * 1.08, name.replace("_", " "), fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tensor data per call (MB of float32)")
    ax.set_ylabel("M weights / s")
    ax.set_title(f"4-bit RTN, group 128 ({api['cpu']}, {api['simd_path']})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    raise SystemExit(main())
