"""Whole checkpoints: safetensors (single, sharded, or a folder) -> one .aq file, streamed."""

from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .aq_file import AqWriter
from .errors import ParameterError
from .safetensors_io import SafetensorsFile, TensorInfo, resolve_checkpoint
from .tensor import QUANTIZABLE_DTYPES, quantize_arrays

MIN_QUANTIZED_ELEMENTS = 1024


def _patterns(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        return list(value)
    raise ParameterError(f"{name} must be a glob pattern or a list of them; got {value!r}")


def should_quantize(info: TensorInfo, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Default: floating tensors with >= 2 dimensions and >= 1,024 elements. A name matching
    ``exclude`` is never quantized; one matching ``include`` is (if its dtype allows)."""
    if info.dtype not in QUANTIZABLE_DTYPES or info.numel == 0:
        return False
    if any(fnmatch.fnmatchcase(info.name, p) for p in exclude):
        return False
    if any(fnmatch.fnmatchcase(info.name, p) for p in include):
        return True
    return len(info.shape) >= 2 and info.numel >= MIN_QUANTIZED_ELEMENTS


def check_output_path(output_path: Path, inputs: Sequence[Path]) -> None:
    if not output_path.parent.is_dir():
        raise ParameterError(f"{output_path}: the output folder {output_path.parent} does not exist")
    if output_path.is_dir():
        raise ParameterError(f"{output_path}: is a directory; give a file path for the .aq output")
    for source in inputs:
        if output_path.resolve() == source.resolve():
            raise ParameterError(f"{output_path}: would overwrite the input checkpoint")


def quantize_checkpoint(safetensors_path: Any, output_path: Any, *, bit_width: int, group_size: int,
                        symmetric: bool, num_threads: int | None, method: str = "rtn", include: Any = None, exclude: Any = None,
                        progress_callback: Callable[[str, float], Any] | None = None, mode: str = "base",
                        bit_width_for: Callable[[str, TensorInfo], int | None] | None = None) -> dict:
    """Quantize every eligible tensor of a checkpoint into ``output_path`` (.aq) and report.

    ``bit_width_for(name, info)`` may override the bit width per tensor (None: carry through)."""
    started = time.perf_counter()
    include_patterns, exclude_patterns = _patterns(include, "include"), _patterns(exclude, "exclude")
    if progress_callback is not None and not callable(progress_callback):
        raise ParameterError(f"progress_callback must be callable; got {type(progress_callback).__name__}")
    files = resolve_checkpoint(safetensors_path)
    output_path = Path(output_path)
    check_output_path(output_path, files)
    opened: list[SafetensorsFile] = []
    try:
        for f in files:  # every header is validated before anything is written
            opened.append(SafetensorsFile(f))
        settings = {"bit_width": bit_width, "group_size": group_size, "symmetric": symmetric, "mode": mode,
                    "include": include_patterns, "exclude": exclude_patterns, "method": method}
        metadata = {"version": __version__, "source_files": [f.name for f in files], "settings": settings,
                    "source_metadata": {sf.path.name: sf.metadata for sf in opened}}
        total_bytes = sum(t.nbytes for sf in opened for t in sf.tensors.values()) or 1
        done_bytes = 0
        layers: dict[str, dict[str, Any]] = {}
        carried = 0
        input_bytes = quantized_source_bytes = quantized_bytes = 0
        with AqWriter(output_path, metadata) as writer:
            for sf in opened:
                for name in sf.names():
                    info = sf.tensors[name]
                    bits = bit_width if should_quantize(info, include_patterns, exclude_patterns) else None
                    if bits is not None and bit_width_for is not None:
                        bits = bit_width_for(name, info)
                    if bits is None:
                        writer.write_raw(name, sf.raw_bytes(name), info.dtype, info.shape)
                        carried += 1
                    else:
                        sf.prefetch(name)
                        [(tensor, stats, _)] = quantize_arrays(
                            [sf.array(name)], [info.dtype], [f"{sf.path.name}: layer {name!r}"], bit_width=bits,
                            group_size=group_size, symmetric=symmetric, method=method, num_threads=num_threads,
                            with_stats=True)
                        writer.write_quantized(name, tensor)
                        layers[name] = {"shape": list(info.shape), "source_dtype": info.dtype, "bit_width": bits,
                                        "bytes_before": info.nbytes, "bytes_after": tensor.nbytes,
                                        "cosine": stats.cosine, "relative_rmse": stats.relative_rmse,
                                        "max_abs_error": stats.max_abs_error}
                        quantized_source_bytes += info.nbytes
                        quantized_bytes += tensor.nbytes
                    input_bytes += info.nbytes
                    sf.release(name)
                    done_bytes += info.nbytes
                    if progress_callback is not None:
                        progress_callback(name, done_bytes / total_bytes)
    finally:
        for sf in opened:
            sf.close()
    seconds = time.perf_counter() - started
    output_bytes = os.path.getsize(output_path)
    cosines = [layer["cosine"] for layer in layers.values()]
    rmses = [layer["relative_rmse"] for layer in layers.values()]
    return {
        "input": [str(f) for f in files],
        "output": str(output_path),
        "layers_quantized": len(layers),
        "layers_carried": carried,
        "input_bytes": input_bytes,
        "output_bytes": output_bytes,
        "compression_ratio": input_bytes / output_bytes if output_bytes else 0.0,
        "quantized_weight_bytes_before": quantized_source_bytes,
        "quantized_weight_bytes_after": quantized_bytes,
        "mean_cosine": sum(cosines) / len(cosines) if cosines else 1.0,
        "min_cosine": min(cosines) if cosines else 1.0,
        "mean_relative_rmse": sum(rmses) / len(rmses) if rmses else 0.0,
        "max_relative_rmse": max(rmses) if rmses else 0.0,
        "seconds": seconds,
        "throughput_mb_s": input_bytes / seconds / 1e6 if seconds > 0 else 0.0,
        "settings": {"bit_width": bit_width, "group_size": group_size, "symmetric": symmetric, "mode": mode,
                     "method": method},
        "layers": layers,
    }
