"""The `arrowquant` command: quantize, dequantize, validate, inspect, demo.

Exit status: 0 success, 1 failure (an error, or a validation that did not pass), 2 usage.
User errors print one line on stderr, never a traceback. Progress bars go to stderr, only on a
terminal and without --quiet. --json prints one machine-readable JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .errors import ArrowQuantError, ParameterError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ProgressBar:
    """A one-line progress bar with throughput and ETA on stderr (silent when not a terminal)."""

    def __init__(self, total_bytes: int, enabled: bool) -> None:
        self.total = max(total_bytes, 1)
        self.enabled = enabled and sys.stderr.isatty()
        self.started = time.perf_counter()
        self.last_draw = 0.0

    def __call__(self, name: str, fraction: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last_draw < 0.05 and fraction < 1.0:
            return
        self.last_draw = now
        elapsed = max(now - self.started, 1e-9)
        rate = fraction * self.total / elapsed
        eta = (1 - fraction) * self.total / rate if rate > 0 else 0.0
        width = 28
        filled = int(width * fraction)
        label = name if len(name) <= 40 else "..." + name[-37:]
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * fraction:5.1f}% "
                         f"{rate / 1e6:7.1f} MB/s ETA {eta:5.1f}s  {label:<40}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _print_json(document: Any) -> None:
    print(json.dumps(_json_safe(document), indent=2))


def _weight_bytes(path: Path) -> int:
    from .safetensors_io import resolve_checkpoint
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(".safetensors"))
    return total or (sum(p.stat().st_size for p in resolve_checkpoint(path)) if path.exists() else 0)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]
    return "\n".join(out)


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB"


def format_quantize_report(report: dict) -> str:
    rows = []
    for name, comp in report["components"].items():
        rows.append([name, _mb(comp["bytes_before"]), _mb(comp["bytes_after"]), f"{comp['compression_ratio']:.2f}x",
                     str(comp["layers_quantized"]), str(comp["layers_carried"]), f"{comp['mean_cosine']:.4f}",
                     f"{comp['min_cosine']:.4f}", str(len(comp["fallbacks"]))])
    o = report["overall"]
    rows.append(["total", _mb(o["bytes_before"]), _mb(o["bytes_after"]), f"{o['compression_ratio']:.2f}x",
                 str(o["layers_quantized"]), str(o["layers_carried"]), f"{o['mean_cosine']:.4f}", f"{o['min_cosine']:.4f}",
                 str(len(report["fallbacks"]))])
    text = _table(rows, ["component", "before", "after", "ratio", "quantized", "carried", "mean cos", "min cos",
                         "fallbacks"])
    bits: dict[str, int] = {}
    for comp in report["components"].values():
        for layer in comp["layers"].values():
            key = f"{layer['bit_width']}-bit ({layer['reason']})"
            bits[key] = bits.get(key, 0) + 1
    text += "\n\nlayers by bit width: " + ", ".join(f"{k}: {v}" for k, v in sorted(bits.items()))
    for f in report["fallbacks"]:
        text += f"\nfallback: {f['layer']} {f['from_bits']} -> {f['to_bits']} bits ({f['reason']})"
    text += f"\n\n{report['output']} written in {report['seconds']:.2f} s"
    return text


def format_validation(report: dict, layers: bool = False) -> str:
    lines = []
    if layers:
        rows = [[name, str(v["bit_width"]), f"{v['cosine']:.5f}", f"{v['relative_rmse']:.4f}",
                 f"{v['sqnr_db']:.2f}" if math.isfinite(v["sqnr_db"]) else "inf", f"{v['max_abs_error']:.3e}",
                 "ok" if v["passed"] else f"FAIL (< {v['threshold']})"]
                for name, v in report["layers"].items()]
        lines.append(_table(rows, ["layer", "bits", "cosine", "rel RMSE", "SQNR dB", "max |err|", "check"]))
        lines.append("")
    lines.append(f"mean cosine {report['mean_cosine']:.5f}, min cosine {report['min_cosine']:.5f}, "
                 f"compression over weights {report['compression_ratio']:.2f}x")
    for p in report["problems"]:
        lines.append(f"problem: {p['layer']}: {p['problem']}")
    for name in report["failed_layers"]:
        v = report["layers"][name]
        lines.append(f"below threshold: {name}: cosine {v['cosine']:.4f} < {v['threshold']}")
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)


def _config_from_args(args) -> Any:
    from .diffusion import DiffusionQuantConfig
    overrides = {k: v for k, v in {
        "bit_width": args.bits, "group_size": args.group_size, "min_accuracy": args.min_accuracy,
        "num_threads": args.threads, "method": args.method}.items() if v is not None}
    if args.symmetric:
        overrides["symmetric"] = True
    if args.no_fallback:
        overrides["fallback"] = False
    if args.no_keep_sensitive:
        overrides["keep_sensitive"] = False
    if args.sensitive_bits is not None:
        overrides["sensitive_bit_width"] = None if args.sensitive_bits == "none" else int(args.sensitive_bits)
    if args.include:
        overrides["include"] = args.include
    if args.exclude:
        overrides["exclude"] = args.exclude
    if args.profile:
        return DiffusionQuantConfig.from_profile(args.profile, **overrides)
    return DiffusionQuantConfig(**overrides)


def cmd_quantize(args) -> int:
    from .quantizer import ArrowQuantV2
    config = _config_from_args(args)
    bar = ProgressBar(_weight_bytes(Path(args.model)), not args.quiet and not args.json)
    try:
        report = ArrowQuantV2(mode=args.mode).quantize_diffusion_model(args.model, args.output, config, bar,
                                                                      overwrite=args.overwrite)
    finally:
        bar.close()
    if args.json:
        _print_json(report)
    elif not args.quiet:
        print(format_quantize_report(report))
    return EXIT_OK


def _dequantize_file(source: Path, target: Path, dtype) -> None:
    from .aq_file import AqFile
    with AqFile(source) as f:
        f.to_safetensors(target, dtype)


def cmd_dequantize(args) -> int:
    source, target = Path(args.input), Path(args.output)
    dtype = None if args.dtype == "source" else args.dtype
    written = []
    if source.is_dir():
        from .diffusion import _prepare_output_folder, _publish
        staging = _prepare_output_folder(target, args.overwrite)
        try:
            for root, _, files in os.walk(source):
                rel = Path(root).relative_to(source)
                (staging / rel).mkdir(parents=True, exist_ok=True)
                for name in files:
                    if name.endswith(".aq"):
                        out = staging / rel / (name[:-3] + ".safetensors")
                        _dequantize_file(Path(root) / name, out, dtype)
                        written.append(str(target / rel / out.name))
                    else:
                        shutil.copy2(Path(root) / name, staging / rel / name)
            _publish(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    else:
        if target.exists() and not args.overwrite:
            raise ParameterError(f"{target}: exists (pass --overwrite to replace it)")
        _dequantize_file(source, target, dtype)
        written.append(str(target))
    if args.json:
        _print_json({"input": str(source), "output": str(target), "files": written})
    elif not args.quiet:
        print("\n".join(f"wrote {w}" for w in written))
    return EXIT_OK


def cmd_validate(args) -> int:
    from .diffusion import validate_quality
    report = validate_quality(args.original, args.quantized, args.threshold)
    if args.json:
        _print_json(report)
    elif not args.quiet:
        print(format_validation(report, layers=args.layers))
    return EXIT_OK if report["passed"] else EXIT_FAILED


def inspect_report(path: Path) -> dict:
    from .aq_file import AqFile
    with AqFile(path) as f:
        layers = f.layers()
        return {"file": str(path), "bytes": path.stat().st_size, "metadata": f.metadata, "layers": layers,
                "layers_quantized": sum(1 for layer in layers if layer["quantized"]),
                "layers_carried": sum(1 for layer in layers if not layer["quantized"])}


def cmd_inspect(args) -> int:
    report = inspect_report(Path(args.file))
    if args.json:
        _print_json(report)
        return EXIT_OK
    meta = report["metadata"]
    print(f"{report['file']}: {meta.get('format')} v{meta.get('format_version')}, written by arrowquant "
          f"{meta.get('version')}, {_mb(report['bytes'])}")
    print(f"source files: {', '.join(meta.get('source_files', []))}")
    print(f"settings: {json.dumps(meta.get('settings', {}))}")
    rows = [[layer["name"], "x".join(map(str, layer["shape"])), str(layer["bit_width"]),
             str(layer["group_size"] or "-"), layer["source_dtype"], f"{layer['bytes']:,}",
             "quantized" if layer["quantized"] else "carried"] for layer in report["layers"]]
    print(_table(rows, ["layer", "shape", "bits", "group", "dtype", "bytes", "stored"]))
    print(f"{report['layers_quantized']} quantized, {report['layers_carried']} carried through")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo import make_demo_model
    from .diffusion import DiffusionQuantConfig, validate_quality
    from .quantizer import ArrowQuantV2
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="arrowquant-demo-"))
    try:
        model = make_demo_model(workdir / "model")
        config = DiffusionQuantConfig.from_profile("local")
        bar = ProgressBar(_weight_bytes(model), not args.quiet and not args.json)
        try:
            report = ArrowQuantV2(mode="diffusion").quantize_diffusion_model(model, workdir / "quantized", config, bar,
                                                                           overwrite=True)
        finally:
            bar.close()
        validation = validate_quality(model, workdir / "quantized")
        if args.json:
            _print_json({"quantize": report, "validate": validation})
        elif not args.quiet:
            print(f"arrowquant {__version__} demo: a generated diffusers-style model (UNet + VAE, heavy-tailed "
                  f"weights), profile 'local' ({config.bit_width}-bit, group {config.group_size}, "
                  f"min cosine {config.min_accuracy}), diffusion mode, method {config.method}\n")
            print(format_quantize_report(report))
            print("\nvalidation against the original:")
            print(format_validation(validation, layers=True))
        return EXIT_OK if validation["passed"] else EXIT_FAILED
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arrowquant", description="Calibration-free 2/4/8-bit quantization of "
                                     "diffusion models and safetensors checkpoints.")
    parser.add_argument("--version", action="version", version=f"arrowquant {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")

    q = sub.add_parser("quantize", help="quantize a model folder, component folder, safetensors file or index")
    q.add_argument("model")
    q.add_argument("output")
    q.add_argument("--profile", choices=["edge", "local", "cloud"])
    q.add_argument("--bits", type=int, choices=[2, 4, 8])
    q.add_argument("--group-size", type=int)
    q.add_argument("--symmetric", action="store_true")
    q.add_argument("--method", choices=["rtn", "search"])
    q.add_argument("--mode", choices=["diffusion", "base"], default="diffusion")
    q.add_argument("--min-accuracy", type=float, help="minimum cosine similarity per layer")
    q.add_argument("--no-fallback", action="store_true", help="fail instead of raising a layer's bit width")
    q.add_argument("--no-keep-sensitive", action="store_true", help="quantize sensitive layers like the rest")
    q.add_argument("--sensitive-bits", choices=["2", "4", "8", "none"])
    q.add_argument("--include", action="append", metavar="GLOB", help="also quantize tensors matching (repeatable)")
    q.add_argument("--exclude", action="append", metavar="GLOB", help="never quantize tensors matching (repeatable)")
    q.add_argument("--threads", type=int)
    q.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    common(q)
    q.set_defaults(run=cmd_quantize)

    d = sub.add_parser("dequantize", help="turn a .aq file (or a quantized model folder) back into safetensors")
    d.add_argument("input")
    d.add_argument("output")
    d.add_argument("--dtype", choices=["source", "float32", "float16", "bfloat16"], default="source")
    d.add_argument("--overwrite", action="store_true")
    common(d)
    d.set_defaults(run=cmd_dequantize)

    v = sub.add_parser("validate", help="compare an original model with its quantized version")
    v.add_argument("original")
    v.add_argument("quantized")
    v.add_argument("--threshold", type=float, help="minimum cosine per layer (default by bit width)")
    v.add_argument("--layers", action="store_true", help="print every layer")
    common(v)
    v.set_defaults(run=cmd_validate)

    i = sub.add_parser("inspect", help="show a .aq file's metadata and layers")
    i.add_argument("file")
    common(i)
    i.set_defaults(run=cmd_inspect)

    m = sub.add_parser("demo", help="generate a small diffusion model, quantize it, validate it")
    m.add_argument("--workdir", help="keep the generated model and output here")
    common(m)
    m.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ArrowQuantError, OSError) as e:
        print(f"arrowquant {args.command}: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"arrowquant {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
