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
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .diffusion import DEFAULT_THRESHOLDS, PROFILES
from .errors import ArrowQuantError, FileFormatError, ParameterError
from .sources import file_kind
from .paths import Terminated, open_input, terminate_as_interrupt

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ProgressBar:
    """Progress on stderr (tqdm), only on a terminal and without --quiet / --json. Called as
    ``bar(name, fraction_done)``; shows bytes done, throughput and an ETA once one is known."""

    def __init__(self, total_bytes: int, enabled: bool, description: str) -> None:
        self.total = max(int(total_bytes), 1)
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            try:  # a terminal that reports no size (some ptys) gets 80x24, not an invisible bar
                sized = min(os.get_terminal_size(sys.stderr.fileno())) > 0
            except OSError:
                sized = False
            self._bar = tqdm(total=self.total, unit="B", unit_scale=True, unit_divisor=1000, desc=description,
                             file=sys.stderr, leave=False, mininterval=0.1, dynamic_ncols=sized,
                             ncols=None if sized else 80, nrows=None if sized else 24)

    def __call__(self, name: str, fraction: float) -> None:
        if self._bar is not None:
            self._bar.update(int(fraction * self.total) - self._bar.n)
            self._bar.set_postfix_str(name if len(name) <= 40 else "..." + name[-37:], refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # a long GGUF metadata array, kept as a NumPy array
        return _json_safe(value.tolist())
    return value


def _print_json(document: Any) -> None:
    print(json.dumps(_json_safe(document), indent=2))


def _source_bytes(path: Path, variant: str | None = None) -> int:
    """Bytes of the weights a model path holds, for the progress bar (0 if it cannot tell: the
    command itself then reports the problem)."""
    from .pipeline.folders import describe_model
    from .safetensors_io import resolve_checkpoint
    try:
        _, components = describe_model(path)
        return sum(resolve_checkpoint(p, variant).nbytes for _, p in components)
    except (ArrowQuantError, OSError):
        return 0


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]
    return "\n".join(out)


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB"


def format_quantize_summary(report: dict, show_output: bool = True) -> str:
    o = report["overall"]
    where = f" -> {report['output']}" if show_output else ""
    return (f"quantized {o['layers_quantized']} layers, carried {o['layers_carried']}: "
            f"{_mb(o['bytes_before'])} -> {_mb(o['bytes_after'])} ({o['compression_ratio']:.2f}x smaller, source "
            f"tensor bytes / .aq bytes), mean weight cosine {o['mean_cosine']:.4f}, in {report['seconds']:.2f} s{where}")


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
    lines.append(f"checked: {report['checks']} against the original (thresholds by bit width: "
                 + ", ".join(f"{b}-bit {t}" for b, t in sorted(DEFAULT_THRESHOLDS.items())) + ")")
    lines.append(f"mean cosine {report['mean_cosine']:.5f}, min cosine {report['min_cosine']:.5f}, "
                 f"{report['compression_ratio']:.2f}x smaller (source tensor bytes / .aq bytes)")
    for p in report["problems"]:
        lines.append(f"problem: {p['layer']}: {p['problem']}")
    for name in report["failed_layers"]:
        v = report["layers"][name]
        lines.append(f"below threshold: {name}: cosine {v['cosine']:.4f} < {v['threshold']}")
    lines.append(("PASSED" if report["passed"] else "FAILED") + ": the weights only; whether the model still "
                 "computes what it should is a functional check (run it on real inputs) that remains yours to do")
    return "\n".join(lines)


def _stored_as(layer: dict) -> str:
    if not layer["quantized"]:
        return "carried"
    if layer.get("scheme") == "kquant":
        return "kquant" + (" + rotation" if layer.get("rotation") == "hadamard256" else "")
    return "quantized"


def _config_from_args(args) -> Any:
    from .diffusion import DiffusionQuantConfig
    overrides = {k: v for k, v in {
        "bit_width": args.bits, "group_size": args.group_size, "min_accuracy": args.min_accuracy,
        "num_threads": args.threads, "method": args.method, "scheme": args.scheme}.items() if v is not None}
    if args.no_rotate:
        overrides["rotate"] = False
    if args.symmetric:
        overrides["symmetric"] = True
    if args.no_fallback:
        overrides["fallback"] = False
    if args.no_keep_sensitive:
        overrides["keep_sensitive"] = False
    if args.embedding_bits is not None:
        overrides["embedding_bit_width"] = args.embedding_bits
    if args.sensitive_bits is not None:
        overrides["sensitive_bit_width"] = None if args.sensitive_bits == "none" else int(args.sensitive_bits)
    if args.include:
        overrides["include"] = args.include
    if args.exclude:
        overrides["exclude"] = args.exclude
    if args.profile:
        return DiffusionQuantConfig.from_profile(args.profile, **overrides)
    return DiffusionQuantConfig.from_profile("local", **{"min_accuracy": None, **overrides})


# ----------------------------------------------------------------------------------------------
# Option values, checked while parsing: a bad one is a usage error (exit 2) naming the option, as
# argparse reports its own, and never reaches the library under its Python parameter name.

def _usage(message: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise _usage(f"must be a positive whole number; got {text!r}")
    return value


def _group_size(text: str) -> int:
    from .validation import check_group_size
    try:
        return check_group_size(int(text))
    except (ValueError, ParameterError):
        raise _usage(f"must be a power of two from 16 to 4096 (e.g. 32, 64, 128, 256); got {text!r}") from None


def _cosine(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise _usage(f"must be a cosine similarity in (0, 1], e.g. 0.9; got {text!r}")
    return value


def _gguf_type_name(text: str) -> str:
    from .gguf.types import GGUF_TYPES, gguf_type
    from .validation import closest
    try:
        gguf_type(text)
    except KeyError:
        near = closest(text, [t.name for t in GGUF_TYPES])
        raise _usage(f"{text!r} is not a GGUF tensor type" + (f" (did you mean {near}?)" if near else "") + "; types: "
                     + ", ".join(t.name for t in GGUF_TYPES)) from None
    return text


def _checked(text: str, check: Callable[[str], Any], explain: Callable[[ParameterError], str]) -> str:
    """``text`` if the library's ``check`` takes it, else a usage error worded by ``explain``."""
    try:
        check(text)
    except ParameterError as e:
        raise _usage(explain(e)) from None
    return text


def _mix(text: str) -> str:
    from .gguf.policy import check_mix
    return _checked(text, check_mix, lambda e: str(e).removeprefix("type "))


def _pattern_type(what: str):
    """GLOB=TYPE (--type-for) or REGEX=TYPE (--tensor-type): the pattern and the type checked."""
    def parse(text: str) -> str:
        pattern, eq, name = text.rpartition("=")
        if not eq or not pattern:
            raise _usage(f"takes {what}=TYPE, e.g. '*.to_out.*=Q8_0'; got {text!r}")
        if what == "REGEX":
            try:
                re.compile(pattern)
            except re.error as e:
                raise _usage(f"{pattern!r} is not a regular expression ({e})") from None
        _gguf_type_name(name)
        return text
    return parse


def _kv_override(text: str) -> str:
    from .gguf.metadata_edits import parse_kv_overrides
    return _checked(text, lambda t: parse_kv_overrides([t]),
                    lambda e: str(e).replace("override_kv entries are", "takes").removeprefix("override_kv "))


def _split_size(text: str) -> str:
    from .gguf.splits import parse_size
    return _checked(text, parse_size,
                    lambda e: f"must be a size such as 500M or 2G (10^6 / 10^9 bytes, as gguf-split); got {text!r}")


def _layer_list(text: str) -> str:
    from .gguf.convert import parse_layer_list
    return _checked(text, parse_layer_list, lambda e: f"must be layer numbers separated by commas, e.g. 0,3,5; got {text!r}")


def _architecture_name(text: str) -> str:
    from .architectures import architecture
    return _checked(text, architecture, lambda e: str(e).removeprefix("architecture "))


# Library messages name a parameter in both vocabularies, "overwrite=True (--overwrite)"; the
# command says only the option.
_PYTHON_AND_OPTION = re.compile(r"\b\w+=[^\s(]* \((--[^)]+)\)")


def _for_the_command(message: str) -> str:
    return _PYTHON_AND_OPTION.sub(r"\1", message)


def _warn(command: str, messages: list[str]) -> None:
    """Each warning once, as one line on stderr."""
    for message in dict.fromkeys(messages):
        print(f"arrowquant {command}: warning: {_for_the_command(message)}", file=sys.stderr)


def _start_ray(address: str | None) -> None:
    """--ray [ADDRESS]: join the cluster at ADDRESS (or RAY_ADDRESS's, or start a local one)."""
    if address is not None:
        import ray
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)


def cmd_quantize(args) -> int:
    from .quantizer import ArrowQuantV2
    config = _config_from_args(args)
    bar = ProgressBar(_source_bytes(Path(args.model), args.variant), not args.quiet and not args.json, "quantize")
    try:
        _start_ray(args.ray)
        report = ArrowQuantV2(mode=args.mode).quantize_diffusion_model(args.model, args.output, config, bar,
                                                                      overwrite=args.overwrite, variant=args.variant,
                                                                      ray=args.ray is not None,
                                                                      allow_pickle=args.allow_pickle)
    finally:
        bar.close()
    if args.json:
        _print_json(report)
    elif not args.quiet:
        if args.layers:
            print(format_quantize_report(report) + "\n")
        print(format_quantize_summary(report))
    return EXIT_OK


def cmd_dequantize(args) -> int:
    from .aq_file import AqFile
    from .paths import check_output_apart, copy_model_files, output_folder, path_inside, warn_extension
    source, target = Path(args.input), Path(args.output)
    dtype = None if args.dtype == "source" else args.dtype
    if not source.exists():
        raise ParameterError(f"{source}: no such .aq file or folder")
    check_output_apart(target, [source])
    files = [source] if not source.is_dir() else [  # every .aq file inside the folder, links that leave it refused
        path_inside(source, str(p.relative_to(source)), f"{source}: .aq file")
        for p in sorted(source.rglob("*.aq")) if p.is_file()]
    if source.is_dir() and not files:  # copying a model that holds nothing to decode helps no one
        raise FileFormatError(f"{source}: holds no .aq file, nothing to dequantize (dequantize reads the output of "
                              "quantize: a .aq file or a folder of them, or a .gguf file)")
    kind = file_kind(source) if source.is_file() else None  # told by content, not by name
    if kind in ("safetensors", "pickle"):
        what = "a PyTorch pickle" if kind == "pickle" else "a safetensors file"
        raise FileFormatError(f"{source}: {what}, not quantized; dequantize reads .aq and .gguf files")
    total = sum(f.stat().st_size for f in files) or 1
    bar = ProgressBar(total, not args.quiet and not args.json, "dequantize")
    done, written = 0, []

    def convert(aq_path: Path, out: Path, overwrite: bool) -> None:
        nonlocal done
        base, size = done, aq_path.stat().st_size
        with AqFile(aq_path) as f:
            f.to_safetensors(out, dtype, overwrite=overwrite,
                             progress_callback=lambda name, fraction: bar(name, (base + fraction * size) / total))
        done += size

    try:
        if kind == "gguf" or (kind is not None and source.name.endswith(".gguf")):
            warn_extension(target, ".safetensors", "a safetensors file")
            from .gguf.model_file import gguf_to_safetensors
            gguf_to_safetensors(source, target, dtype, overwrite=args.overwrite, progress_callback=bar)
            written.append(str(target))
        elif source.is_dir():
            with output_folder(target, args.overwrite) as staging:
                copy_model_files(source, staging, lambda rel: rel.name.endswith(".aq") or rel.name == ".arrowquant-output")
                for aq_path in files:
                    rel = aq_path.relative_to(source)
                    out = staging / rel.parent / (rel.name[:-3] + ".safetensors")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    convert(aq_path, out, False)
                    written.append(str(target / rel.parent / out.name))
        else:
            warn_extension(target, ".safetensors", "a safetensors file")
            convert(source, target, args.overwrite)
            written.append(str(target))
    finally:
        bar.close()
    if args.json:
        _print_json({"input": str(source), "output": str(target), "files": written})
    elif not args.quiet:
        print("\n".join(f"wrote {w}" for w in written))
    return EXIT_OK


def format_gguf_report(report: dict, layers: bool = False) -> str:
    """One line per component, one per kind of fallback and of dropped tensor (every tensor with
    ``layers``), and the totals."""
    lines = []
    for name, comp in report["components"].items():
        counts: dict[str, int] = {}
        for t in comp["tensors"].values():
            counts[t["type"]] = counts.get(t["type"], 0) + 1
        lines.append(f"{name}: {comp['architecture']}, {len(comp['tensors'])} tensors ("
                     + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f") -> {comp['output']}"
                     + (f" and {len(comp['shards']) - 1} more shards (llama.cpp loads them from the first)"
                        if comp.get("shards") else ""))
        if layers:
            lines += [f"  {t}: {v['type']} ({v['reason']})" for t, v in comp["tensors"].items()]
        by_reason: dict[str, list[str]] = {}
        for tensor, why in (comp.get("why_dropped") or {}).items():
            by_reason.setdefault(why, []).append(tensor)
        for why, tensors in by_reason.items():
            which = ", ".join(tensors) if layers else tensors[0] + (", ... (--layers lists them)" if len(tensors) > 1
                                                                      else "")
            lines.append(f"{name}: left out {len(tensors)} tensor{'s' if len(tensors) > 1 else ''} ({why}): {which}")
    kinds: dict[tuple[str, str, str], list[str]] = {}
    for f in report["fallbacks"]:  # the reason's last clause says why (rows of N are not a multiple of ...)
        kinds.setdefault((f["from_type"], f["to_type"], f["reason"].split("; ")[-1]), []).append(f["tensor"])
    for (src, dst, why), tensors in kinds.items():
        which = ", ".join(tensors) if layers else tensors[0] + (", ... (--layers lists them)" if len(tensors) > 1 else "")
        lines.append(f"fallback: {len(tensors)} tensor{'s' if len(tensors) > 1 else ''} {src} -> {dst}, {why}: {which}")
    for name in report["kept_as_safetensors"]:
        lines.append(f"{name}: no known architecture, kept as safetensors")
    lines.append(f"{report['type']}: {_mb(report['bytes_before'])} -> {_mb(report['bytes_after'])} "
                 f"({report['compression_ratio']:.2f}x smaller, source tensor bytes / .gguf bytes) in "
                 f"{report['seconds']:.2f} s -> {report['output']}")
    if report.get("dry_run"):
        lines.append("dry run: the types and sizes above were decided; nothing was quantized or written")
    return "\n".join(lines)


MAX_TENSOR_TYPE_FILE = 1 << 20


def _tensor_type_files(paths: list[str] | None) -> list[str]:
    """--tensor-type-file: REGEX=TYPE entries separated by spaces or newlines, each checked as
    --tensor-type's are (an error names the file and the entry)."""
    entries = []
    for path in paths or []:
        with open_input(Path(path), "a tensor type file") as f:
            data = f.read(MAX_TENSOR_TYPE_FILE + 1)
        if len(data) > MAX_TENSOR_TYPE_FILE:
            raise ParameterError(f"{path}: over {MAX_TENSOR_TYPE_FILE} bytes; a tensor type file lists REGEX=TYPE entries")
        try:
            words = data.decode("utf-8").split()
        except UnicodeDecodeError:
            raise ParameterError(f"{path}: not UTF-8 text; a tensor type file lists REGEX=TYPE entries") from None
        for word in words:
            try:
                _pattern_type("REGEX")(word)
            except argparse.ArgumentTypeError as e:
                raise ParameterError(f"{path}: entry {word!r}: {e}") from None
        entries += words
    return entries


def cmd_gguf(args) -> int:
    from .gguf import convert
    bar = ProgressBar(_source_bytes(Path(args.model), args.variant), not args.quiet and not args.json, "gguf")
    try:
        _start_ray(args.ray)
        report = convert(args.model, args.output, type=args.type, type_for=args.type_for, arch=args.arch,
                         variant=args.variant, overwrite=args.overwrite, num_threads=args.threads,
                         rearrange_rows=args.comfyui_rows, method=args.method, progress_callback=bar,
                         ray=args.ray is not None, allow_pickle=args.allow_pickle,
                         allow_requantize=args.allow_requantize, output_tensor_type=args.output_tensor_type,
                         token_embedding_type=args.token_embedding_type, pure=args.pure,
                         leave_output_tensor=args.leave_output_tensor,
                         tensor_type=(args.tensor_type or []) + _tensor_type_files(args.tensor_type_file) or None,
                         imatrix=args.imatrix, include_weights=args.include_weights,
                         exclude_weights=args.exclude_weights, override_kv=args.override_kv,
                         split_max_size=args.split_max_size, split_max_tensors=args.split_max_tensors,
                         keep_split=args.keep_split, prune_layers=args.prune_layers, dry_run=args.dry_run)
    finally:
        bar.close()
    if args.json:
        _print_json(report)
    elif not args.quiet:
        print(format_gguf_report(report, layers=args.layers))
    return EXIT_OK


def cmd_validate(args) -> int:
    from .diffusion import validate_quality
    bar = ProgressBar(_source_bytes(Path(args.original), args.variant), not args.quiet and not args.json, "validate")
    try:
        report = validate_quality(args.original, args.quantized, args.threshold, variant=args.variant,
                                  progress_callback=bar)
    finally:
        bar.close()
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


def inspect_gguf_report(path: Path) -> dict:
    from .gguf import open as open_gguf
    with open_gguf(path) as f:
        tensors = [{"name": t.name, "shape": list(f.original_shape(t.name)), "stored_shape": list(t.shape),
                    "type": t.type.name, "bytes": t.nbytes} for t in f.tensors.values()]
        metadata = {k: v for k, v in f.metadata.items() if not k.startswith("comfy.gguf.orig_shape.")}
    counts: dict[str, int] = {}
    for t in tensors:
        counts[t["type"]] = counts.get(t["type"], 0) + 1
        shards = [str(s.path) for s in f.shards]
    return {"file": str(path), "bytes": sum(Path(s).stat().st_size for s in shards),
            "architecture": metadata.get("general.architecture"), "metadata": metadata, "tensors": tensors,
            "types": counts, **({"shards": shards} if len(shards) > 1 else {})}


def cmd_inspect(args) -> int:
    path = Path(args.file)
    kind = file_kind(path) if path.is_file() else None
    if kind in ("safetensors", "pickle"):
        raise FileFormatError(f"{path}: a {'safetensors' if kind == 'safetensors' else 'PyTorch pickle'} file; "
                              "inspect reads what arrowquant writes: .aq files (quantize) and .gguf files (gguf)")
    if path.name.endswith(".gguf") or kind == "gguf":
        report = inspect_gguf_report(path)
        if args.json:
            _print_json(report)
        elif not args.quiet:
            split = f" in {len(report['shards'])} shards" if "shards" in report else ""
            print(f"{report['file']}: GGUF{split}, architecture {report['architecture']}, {_mb(report['bytes'])}, "
                  + ", ".join(f"{k} {v}" for k, v in sorted(report["types"].items())))
            meta = {k: v for k, v in report["metadata"].items()
                    if isinstance(v, (str, int, float)) or (isinstance(v, list) and len(v) <= 8)}
            print("metadata: " + ", ".join(f"{k}={v}" for k, v in meta.items()))
            rows = [[t["name"], "x".join(map(str, t["shape"])), t["type"], f"{t['bytes']:,}"] for t in report["tensors"]]
            print(_table(rows, ["tensor", "shape", "type", "bytes"]))
        return EXIT_OK
    report = inspect_report(path)
    if args.json:
        _print_json(report)
        return EXIT_OK
    if args.quiet:
        return EXIT_OK
    meta = report["metadata"]
    print(f"{report['file']}: {meta.get('format')} v{meta.get('format_version')}, written by arrowquant "
          f"{meta.get('version')}, {_mb(report['bytes'])}")
    print(f"source files: {', '.join(meta.get('source_files', []))}")
    print(f"settings: {json.dumps(meta.get('settings', {}))}")
    rows = [[layer["name"], "x".join(map(str, layer["shape"])), str(layer["bit_width"]),
             str(layer["group_size"] or "-"), layer["source_dtype"], f"{layer['bytes']:,}",
             _stored_as(layer)] for layer in report["layers"]]
    print(_table(rows, ["layer", "shape", "bits", "group", "dtype", "bytes", "stored"]))
    print(f"{report['layers_quantized']} quantized, {report['layers_carried']} carried through")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo import is_current_demo, make_demo_model
    from .diffusion import DiffusionQuantConfig, validate_quality
    from .quantizer import ArrowQuantV2
    keep = args.workdir is not None
    workdir = Path(args.workdir) if keep else Path(tempfile.mkdtemp(prefix="arrowquant-demo-"))
    try:
        if keep:
            workdir.mkdir(parents=True, exist_ok=True)
        model = workdir / "model"
        if not is_current_demo(model):
            if model.exists() and (not model.is_dir() or any(model.iterdir())):  # never written over
                raise ParameterError(f"{model}: exists and is not this version's demo model (an earlier demo's "
                                     "layout, or other files); remove it or choose another --workdir")
            make_demo_model(model)
        config = DiffusionQuantConfig.from_profile("local")
        show = not args.quiet and not args.json
        if show:
            print(f"arrowquant {__version__} demo: quantize a generated Stable Diffusion pipeline (a tiny, untrained "
                  f"UNet, VAE and CLIP text encoder that diffusers loads; heavy-tailed weights) with profile 'local' ({config.bit_width}-bit {config.scheme}, method {config.method}, "
                  "diffusion mode), then validate it against the original.\n")
        bar = ProgressBar(_source_bytes(model), show, "quantize")
        try:
            report = ArrowQuantV2(mode="diffusion").quantize_diffusion_model(model, workdir / "quantized", config, bar,
                                                                           overwrite=True)
        finally:
            bar.close()
        validation = validate_quality(model, workdir / "quantized")
        if args.json:
            _print_json({"quantize": report, "validate": validation})
        elif show:
            if args.layers:
                print(format_quantize_report(report) + "\n")
                print(format_validation(validation, layers=True) + "\n")
            print(format_quantize_summary(report, show_output=keep))
            print(f"validation: {'PASSED' if validation['passed'] else 'FAILED'} (min weight cosine "
                  f"{validation['min_cosine']:.4f}; per-layer tables with --layers)")
            if keep:
                print(f"\nnext: arrowquant inspect {workdir}/quantized/unet/diffusion_pytorch_model.aq\n"
                      f"      arrowquant validate {workdir}/model {workdir}/quantized --layers\n"
                      f"      arrowquant quantize {workdir}/model {workdir}/edge --profile edge")
            else:
                print("\nnext: `arrowquant demo --workdir DIR` keeps the model and its quantized copy in DIR; "
                      "then `arrowquant quantize DIR/model OUT`, `arrowquant validate DIR/model OUT`.")
        return EXIT_OK if validation["passed"] else EXIT_FAILED
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; shows a default unless the help already says it (or it
    is None: then the help says what happens instead)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: {action.default})"


_PROFILES_HELP = "; ".join(
    f"{name}: {v['bit_width']}-bit, " + ("kquant" if v.get("scheme") == "kquant" else f"group {v['group_size']}")
    + f", min cosine {v['min_accuracy']}" for name, v in PROFILES.items())


def add_ray_argument(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help=f"{verb} every tensor in a Ray task (pip "
                        "install 'arrowquant[ray]'): on the cluster at ADDRESS, or without one on RAY_ADDRESS's or a "
                        "new local cluster; the model must lie on storage every node sees; the output is byte-identical")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arrowquant", formatter_class=_HelpFormatter,
        description="Calibration-free quantization of neural-network weights, 2 to 8 bits: diffusion models\n"
                    "(UNet, DiT, Flux, SD3, Wan, ...) and language models, from safetensors, FP8, GGUF or PyTorch\n"
                    "checkpoints, into .aq files for PyTorch or GGUF files for ComfyUI-GGUF, diffusers,\n"
                    "stable-diffusion.cpp and llama.cpp.",
        epilog="examples:\n  arrowquant demo --workdir demo\n  arrowquant quantize demo/model out --profile local\n"
               "  arrowquant validate demo/model out\n\n`arrowquant COMMAND --help` describes each command.")
    parser.add_argument("--version", action="version", version=f"arrowquant {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, examples: list[str]) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=summary, formatter_class=_HelpFormatter,
                              epilog="examples:\n" + "\n".join(f"  {e}" for e in examples))

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of text")
        p.add_argument("--quiet", action="store_true", help="no progress bar and no text on stdout (errors still go "
                                                             "to stderr)")

    q = command("quantize", "quantize a diffusers model folder, a component folder, a safetensors file or an index "
                "into .aq files", ["arrowquant quantize sd-model sd-model-4bit",
                                   "arrowquant quantize sd-model sd-edge --profile edge --min-accuracy 0.7",
                                   "arrowquant quantize unet/diffusion_pytorch_model.safetensors unet.aq --mode base"])
    q.add_argument("model", help="model folder (with model_index.json), component folder, .safetensors file or "
                                 "*.safetensors.index.json")
    q.add_argument("output", help="output folder for a folder input (mirrors it), a .aq file for a file input; must "
                                  "lie outside the input")
    q.add_argument("--profile", choices=list(PROFILES), help=f"preset settings ({_PROFILES_HELP}); the options "
                                                              "below override it (default: local without min cosine)")
    q.add_argument("--bits", type=int, choices=[2, 3, 4, 5, 6, 8], help="code bits per weight: 2, 4, 8 (affine); 2, 3, "
                   "4, 5, 6, 8 (kquant) (default: 4, or the profile's)")
    q.add_argument("--scheme", choices=["affine", "kquant"], help="affine: groups of --group-size with a float scale "
                   "and zero point (format v1); kquant: k-quant super-blocks with 2-level parameters and a Hadamard "
                   "rotation, lower error at the same size (format v2; 2.625 / 3.44 / 4.5 / 5.5 / 6.56 / 8.5 bits per "
                   "weight) (default: the profile's; local's is kquant)")
    q.add_argument("--no-rotate", action="store_true", help="kquant without the Hadamard rotation")
    q.add_argument("--group-size", type=_group_size, help="affine: weights per group sharing a scale and zero point, a power "
                                                  "of two 16..4096 (default: 128, or the profile's)")
    q.add_argument("--symmetric", action="store_true", help="symmetric groups (zero point fixed at the middle code)")
    q.add_argument("--method", choices=["rtn", "search"],
                   help="rtn: fast rounding (affine: min/max; kquant: ggml's rounding or a fast fit of its error); "
                        "search: lower error, 7-18x slower (default: search for affine, rtn for kquant)")
    q.add_argument("--mode", choices=["diffusion", "base"], default="diffusion",
                   help="diffusion: keep sensitive layers (embeddings, input/output, norms, first/last block) at "
                        "--sensitive-bits; base: every layer alike")
    q.add_argument("--variant", help="take the weights of this variant, e.g. fp16 for *.fp16.safetensors (default: "
                                     "the files without a variant, as diffusers does)")
    q.add_argument("--allow-pickle", action="store_true", help="read PyTorch pickles (.ckpt, .pt, .pth, .bin) with "
                   "torch.load(weights_only=True) (needs the torch extra); unpickling can run code hidden in a file")
    q.add_argument("--min-accuracy", type=_cosine, help="minimum weight cosine per layer; a layer below it moves to "
                                                      "more bits (2 -> 4 -> 8; kquant one width at a time) (default: none, or the profile's)")
    q.add_argument("--no-fallback", action="store_true", help="fail instead of raising a layer's bit width")
    q.add_argument("--no-keep-sensitive", action="store_true", help="quantize sensitive layers like the rest")
    q.add_argument("--sensitive-bits", choices=["2", "3", "4", "5", "6", "8", "none"], help="bits for sensitive layers; none keeps "
                                                                             "them unquantized (default: 8)")
    q.add_argument("--embedding-bits", type=int, choices=[2, 3, 4, 5, 6, 8], help="bits for token-embedding tables "
                   "(word_embeddings, embed_tokens, token_embd, wte, ...), which cost the model less error per bit "
                   "than the matrices (e.g. --scheme kquant --bits 5 --embedding-bits 3) (default: --bits)")
    q.add_argument("--include", action="append", metavar="GLOB", help="also quantize tensors matching (repeatable)")
    q.add_argument("--exclude", action="append", metavar="GLOB", help="never quantize tensors matching (repeatable)")
    q.add_argument("--threads", type=_positive_int, help="worker threads (default: the CPUs this process may use)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing output (a folder only if an earlier "
                                                            "arrowquant run wrote it)")
    q.add_argument("--layers", action="store_true", help="also print per-component and per-bit-width tables")
    add_ray_argument(q, "quantize")
    common(q)
    q.set_defaults(run=cmd_quantize)

    d = command("dequantize", "turn a .aq or .gguf file (or a quantized model folder) back into safetensors",
                ["arrowquant dequantize sd-model-4bit sd-model-restored",
                 "arrowquant dequantize unet.aq unet.safetensors --dtype float16",
                 "arrowquant dequantize unet-Q4_K_M.gguf unet.safetensors"])
    d.add_argument("input", help=".aq file, .gguf file, or a folder written by `arrowquant quantize`")
    d.add_argument("output", help="a .safetensors file for a file input, a folder for a folder input")
    d.add_argument("--dtype", choices=["source", "float32", "float16", "bfloat16"], default="source",
                   help="source: each tensor in the dtype it had (GGUF: quantized tensors as float32); otherwise "
                        "every floating tensor (quantized or carried) is converted to this dtype; integer tensors "
                        "stay as stored")
    d.add_argument("--overwrite", action="store_true", help="replace an existing output (a folder only if arrowquant "
                                                            "wrote it)")
    common(d)
    d.set_defaults(run=cmd_dequantize)

    v = command("validate", "compare a quantized model with its original, weight by weight (cosine per layer); "
                "exit 1 if a layer is below its threshold", ["arrowquant validate sd-model sd-model-4bit",
                                                             "arrowquant validate m.safetensors m.aq --threshold 0.99 "
                                                             "--layers"])
    v.add_argument("original", help="the original model folder, safetensors file or index")
    v.add_argument("quantized", help="the .aq or .gguf file, or the folder `arrowquant quantize` / `arrowquant gguf` "
                                     "wrote from it")
    v.add_argument("--threshold", type=_cosine, help="minimum weight cosine per layer (default by bit width: "
                   + ", ".join(f"{b}-bit {t}" for b, t in sorted(DEFAULT_THRESHOLDS.items())) + ")")
    v.add_argument("--variant", help="the original's weight variant, as given to quantize")
    v.add_argument("--layers", action="store_true", help="print every layer")
    common(v)
    v.set_defaults(run=cmd_validate)

    from .gguf.types import GGUF_TYPES, MIXES
    g = command("gguf", "convert a model to GGUF: diffusion models (diffusers, ComfyUI-GGUF, stable-diffusion.cpp), "
                "llama-family language models (llama.cpp), T5 / UMT5 text encoders",
                ["arrowquant gguf flux1-dev.safetensors flux1-dev-Q4_K_M.gguf --type Q4_K_M",
                 "arrowquant gguf Qwen2.5-0.5B-Instruct qwen-Q4_K_M.gguf   # config.json, tokenizer, safetensors",
                 "arrowquant gguf sd-model sd-model-gguf --type Q8_0   # a diffusers folder: one .gguf per denoiser",
                 "arrowquant gguf unet unet-Q5_K_M.gguf --type Q5_K_M --type-for '*.to_out.*=Q8_0'"])
    g.add_argument("model", help=".safetensors file, *.safetensors.index.json, component folder, diffusers folder, or "
                                 "a .gguf file (re-encoded with --type, as llama-quantize does)")
    g.add_argument("output", help="a .gguf file (a folder for a diffusers folder); must lie outside the input")
    g.add_argument("--type", default="Q4_K_M", metavar="TYPE", type=_mix,
                   help="the mix, as llama.cpp names them: " + ", ".join(MIXES) + " (Q4_K means Q4_K_M; "
                        "llama-quantize's numeric ids too, e.g. 15 for Q4_K_M)")
    g.add_argument("--type-for", action="append", metavar="GLOB=TYPE", type=_pattern_type("GLOB"), help="this tensor type for tensors matching "
                   "GLOB (repeatable; types: " + ", ".join(t.name for t in GGUF_TYPES) + ")")
    g.add_argument("--arch", type=_architecture_name, help="the architecture written as general.architecture (default: detected from the "
                                  "tensor names)")
    g.add_argument("--variant", help="take the weights of this variant, e.g. fp16 for *.fp16.safetensors")
    lq = g.add_argument_group("llama-quantize's options", "under llama-quantize's (and gguf-split's) names; the "
                              "per-tensor ones apply to\nlanguage models and text encoders")
    lq.add_argument("--output-tensor-type", metavar="TYPE", type=_gguf_type_name, help="language models: this type for output.weight "
                   "(as llama-quantize's option)")
    lq.add_argument("--token-embedding-type", metavar="TYPE", type=_gguf_type_name, help="language models: this type for token_embd.weight")
    lq.add_argument("--pure", action="store_true", help="language models: every quantized tensor in the mix's base "
                   "type, without llama-quantize's per-tensor rules")
    lq.add_argument("--leave-output-tensor", action="store_true", help="language models: leave output.weight "
                   "unquantized")
    lq.add_argument("--tensor-type", action="append", metavar="REGEX=TYPE", type=_pattern_type("REGEX"), help="language models: this type for "
                   "tensors whose name REGEX matches (repeatable; llama-quantize's --tensor-type)")
    lq.add_argument("--imatrix", metavar="FILE", help="an importance matrix from llama-imatrix (GGUF or .dat): "
                   "tensors it covers are quantized by ggml's importance-weighted quantizers, as llama-quantize does")
    lq.add_argument("--include-weights", action="append", metavar="NAME", help="use the importance matrix only for "
                   "tensors whose name contains NAME (repeatable; llama-quantize's option)")
    lq.add_argument("--exclude-weights", action="append", metavar="NAME", help="do not use the importance matrix for "
                   "tensors whose name contains NAME (repeatable; llama-quantize's option; not with --include-weights)")
    lq.add_argument("--override-kv", action="append", metavar="KEY=TYPE:VALUE", type=_kv_override,
                   help="set a metadata entry in the output, TYPE int, float, bool or str (repeatable; "
                        "llama-quantize's option, e.g. general.name=str:My model)")
    lq.add_argument("--split-max-size", metavar="N(M|G)", type=_split_size, help="language models: write shards "
                   "of at most N megabytes / gigabytes of tensors, model-00001-of-0000K.gguf ... (gguf-split's "
                   "option; llama.cpp loads them from the first)")
    lq.add_argument("--split-max-tensors", metavar="N", type=_positive_int, help="language models: write shards of "
                   "at most N tensors (gguf-split's option)")
    lq.add_argument("--keep-split", action="store_true", help="with a split GGUF source: write the output in the "
                   "same shards (llama-quantize's option)")
    lq.add_argument("--prune-layers", metavar="L0,L1,...", type=_layer_list, help="with a language-model GGUF "
                   "source: leave these blk.N layers out and renumber the rest (llama-quantize's option)")
    lq.add_argument("--tensor-type-file", metavar="FILE", action="append", help="language models: REGEX=TYPE "
                   "entries, separated by spaces or newlines, as --tensor-type (llama-quantize's option)")
    lq.add_argument("--dry-run", action="store_true", help="choose every tensor's type and report the output's size "
                   "without quantizing or writing anything (llama-quantize's option)")
    lq.add_argument("--allow-requantize", action="store_true", help="with a GGUF source: re-quantize tensors that "
                   "are already quantized to another type (their error adds to the first; as llama-quantize's option)")
    g.add_argument("--allow-pickle", action="store_true", help="read PyTorch pickles (.ckpt, .pt, .pth, .bin) with "
                   "torch.load(weights_only=True) (needs the torch extra); unpickling can run code hidden in a file")
    g.add_argument("--method", choices=["ggml", "search"], default="search",
                   help="search (default): the same formats with lower error for the k-quants (never worse on any "
                        "block than ggml's quantizer, and faster than it); ggml: exactly the bytes of ggml's "
                        "reference quantizer (llama-quantize without an imatrix)")
    g.add_argument("--comfyui-rows", action="store_true", help="sd1/sdxl: store 3x3 convolutions as rows of 256 so they "
                   "are k-quantized too (ComfyUI-GGUF's own layout; diffusers and stable-diffusion.cpp cannot read it)")
    g.add_argument("--threads", type=_positive_int, help="worker threads (default: the CPUs this process may use; with --ray, "
                   "the CPUs of each task)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output")
    g.add_argument("--layers", action="store_true", help="list every tensor's type and every fallback and left-out "
                   "tensor (by default one line per kind)")
    add_ray_argument(g, "encode")
    common(g)
    g.set_defaults(run=cmd_gguf)

    i = command("inspect", "show a .aq or .gguf file's metadata and tensors",
                ["arrowquant inspect unet.aq", "arrowquant inspect unet.aq --json", "arrowquant inspect unet-Q4_K_M.gguf"])
    i.add_argument("file", help="a .aq or .gguf file")
    common(i)
    i.set_defaults(run=cmd_inspect)

    m = command("demo", "generate a small diffusion model, quantize it, validate it",
                ["arrowquant demo", "arrowquant demo --workdir demo --layers"])
    m.add_argument("--workdir", help="keep the generated model and its quantized copy in this folder (default: a "
                                     "temporary folder, deleted at the end)")
    m.add_argument("--layers", action="store_true", help="also print the per-layer tables")
    common(m)
    m.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught, terminate_as_interrupt():
            warnings.simplefilter("always")
            status = args.run(args)
        _warn(args.command, [str(w.message) for w in caught])
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # `arrowquant inspect x.aq | head`: the reader left; that is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except (ArrowQuantError, OSError) as e:
        print(f"arrowquant {args.command}: error: {_for_the_command(str(e))}", file=sys.stderr)
        return EXIT_FAILED
    except Terminated:
        print(f"arrowquant {args.command}: terminated; partial output removed", file=sys.stderr)
        return 128 + 15
    except KeyboardInterrupt:
        print(f"arrowquant {args.command}: interrupted; partial output removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
