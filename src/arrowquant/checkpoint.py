"""Whole checkpoints: safetensors (single, sharded, or a folder) -> one .aq file, streamed."""

from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import __version__
from .aq_file import AqWriter
from .errors import AccuracyError, ParameterError
from .fp8 import FP8_DTYPES, Fp8Scale, fp8_layout, widen
from .markov import DEFAULT_THRESHOLD as DEFAULT_MARKOV_THRESHOLD
from .paths import check_file_output, check_output_apart, terminate_as_interrupt, warn_extension
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
    """Default: floating tensors (FP8 included) with >= 2 dimensions and >= 1,024 elements. A name
    matching ``exclude`` is never quantized; one matching ``include`` is (if its dtype allows)."""
    if (info.dtype not in QUANTIZABLE_DTYPES and info.dtype not in FP8_DTYPES) or info.numel == 0:
        return False
    if any(fnmatch.fnmatchcase(info.name, p) for p in exclude):
        return False
    if any(fnmatch.fnmatchcase(info.name, p) for p in include):
        return True
    return len(info.shape) >= 2 and info.numel >= MIN_QUANTIZED_ELEMENTS


def _why_none(plan: list) -> str:
    """Why a plan quantizes nothing, by kind of tensor, e.g. "3 of dtype I64; 2 excluded"."""
    counts: dict[str, int] = {}
    for _, _, info, _, reason in plan:
        key = f"of dtype {info.dtype}" if info.dtype not in QUANTIZABLE_DTYPES + FP8_DTYPES else reason
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{n} {key}" for key, n in counts.items())


# The min_accuracy fallback: the next bit width up, per scheme.
NEXT_BIT_WIDTH = {"affine": {2: 4, 4: 8}, "kquant": {2: 3, 3: 4, 4: 5, 5: 6, 6: 8}}


class TensorJob:
    """One tensor to quantize: where it is and how (what an executor needs)."""

    __slots__ = ("file", "name", "info", "bits", "group_size", "symmetric", "method", "markov_threshold", "scheme",
                 "rotate", "fp8_scale")

    def __init__(self, file: SafetensorsFile, name: str, info: TensorInfo, bits: int, group_size: int, symmetric: bool,
                 method: str, markov_threshold: float, scheme: str = "affine", rotate: bool = True,
                 fp8_scale: Fp8Scale | None = None) -> None:
        self.file, self.name, self.info, self.bits = file, name, info, bits
        self.group_size, self.symmetric, self.method, self.markov_threshold = group_size, symmetric, method, markov_threshold
        self.scheme, self.rotate, self.fp8_scale = scheme, rotate, fp8_scale

    @property
    def dtype(self) -> str:
        """The dtype the kernels read: an FP8 tensor's values are widened to float32 first."""
        return "F32" if self.info.dtype in FP8_DTYPES else self.info.dtype

    def source_array(self) -> Any:
        """The tensor's values as the kernels take them (zero-copy, or FP8 widened and scaled)."""
        return source_array(self.file, self.name, self.fp8_scale)

    def quantize(self, array: Any, num_threads: int | None, bits: int | None = None) -> tuple:
        """(QuantizedTensor, ErrorStats, Markov metrics) of this tensor (at ``bits`` if given)."""
        [result] = quantize_arrays([array], [self.dtype], [self.label], bit_width=bits or self.bits,
                                   group_size=self.group_size, symmetric=self.symmetric, method=self.method,
                                   num_threads=num_threads, with_stats=True, markov_threshold=self.markov_threshold,
                                   scheme=self.scheme, rotate=self.rotate)
        return result

    @property
    def label(self) -> str:
        return f"{self.file.path.name}: layer {self.name!r}"


def source_array(sf: SafetensorsFile, name: str, fp8_scale: Fp8Scale | None = None) -> Any:
    """A tensor's values for the kernels: a view of the mapped file, or for FP8 a float32 copy
    with its scale applied (fp8.py)."""
    info = sf.tensors[name]
    if info.dtype in FP8_DTYPES:
        return widen(sf.array(name), info.dtype, fp8_scale)
    return sf.array(name)


def local_executor(num_threads: int | None) -> Callable[[list[TensorJob]], Iterator[tuple]]:
    """Quantizes the jobs here, one tensor at a time, its pages mapped just before and released
    right after (peak memory: one tensor and its output)."""
    def run(jobs: list[TensorJob]) -> Iterator[tuple]:
        for job in jobs:
            job.file.prefetch(job.name)
            yield job.quantize(job.source_array(), num_threads)
            job.file.release(job.name)
    return run


def quantize_checkpoint(safetensors_path: Any, output_path: Any, *, bit_width: int, group_size: int,
                        symmetric: bool, num_threads: int | None, method: str = "rtn", include: Any = None, exclude: Any = None,
                        progress_callback: Callable[[str, float], Any] | None = None, mode: str = "base",
                        bit_width_for: Callable[[str, TensorInfo], tuple[int | None, str]] | None = None,
                        min_accuracy: float | None = None, fallback: bool = True,
                        extra_metadata: dict | None = None, overwrite: bool = False, variant: str | None = None,
                        markov_threshold: float = DEFAULT_MARKOV_THRESHOLD, executor: Any = None,
                        scheme: str = "affine", rotate: bool = True) -> dict:
    """Quantize every eligible tensor of a checkpoint into ``output_path`` (.aq) and report.

    ``bit_width_for(name, info)`` may choose the bit width per eligible tensor and say why:
    (bits, reason), bits None meaning carry it through. With ``min_accuracy`` each quantized
    layer's cosine similarity is checked right after quantizing it; a layer below it moves to the
    next bit width (affine 2 -> 4 -> 8, kquant 2 -> 3 -> 4 -> 5 -> 6 -> 8) if ``fallback``, else (or if 8 bits do not reach it either) an
    AccuracyError names it. An existing output is replaced only with ``overwrite``; ``variant``
    picks the weights of a folder holding several (``model.fp16.safetensors``). ``executor(jobs)``
    (default: this process, one tensor at a time) yields each TensorJob's (QuantizedTensor,
    ErrorStats, Markov metrics) in order; arrowquant.ray passes one that runs them on a cluster.
    ``scheme`` "kquant" (with ``rotate``) writes format version 2 (docs/format.md)."""
    started = time.perf_counter()
    include_patterns, exclude_patterns = _patterns(include, "include"), _patterns(exclude, "exclude")
    if progress_callback is not None and not callable(progress_callback):
        raise ParameterError(f"progress_callback must be callable; got {type(progress_callback).__name__}")
    checkpoint = resolve_checkpoint(safetensors_path, variant)
    files = checkpoint.files
    output_path = Path(output_path)
    check_output_apart(output_path, checkpoint.inputs + [Path(safetensors_path)])
    check_file_output(output_path, overwrite)
    warnings_out = [w for w in [warn_extension(output_path, ".aq", "a .aq file (Arrow IPC)")] if w]
    opened = checkpoint.open()  # every header and the checkpoint as a whole validated before anything is written
    try:
        settings = {"bit_width": bit_width, "group_size": group_size, "symmetric": symmetric, "mode": mode,
                    "include": include_patterns, "exclude": exclude_patterns, "method": method,
                    "min_accuracy": min_accuracy, "fallback": fallback, "scheme": scheme, "rotate": rotate,
                    **(extra_metadata or {})}
        metadata = {"version": __version__, "source_files": [f.name for f in files], "settings": settings,
                    "source_metadata": {sf.path.name: sf.metadata for sf in opened}}
        total_bytes = sum(t.nbytes for sf in opened for t in sf.tensors.values()) or 1
        done_bytes = 0
        layers: dict[str, dict[str, Any]] = {}
        markov_raw: dict[str, tuple] = {}
        carried: dict[str, str] = {}
        fallbacks: list[dict[str, Any]] = []
        input_bytes = quantized_source_bytes = quantized_bytes = quantized_elements = 0
        # The plan first (names and bit widths, no data), then the data in checkpoint order.
        # FP8 scales and markers go with their weight: dropped with it when it is quantized.
        fp8 = fp8_layout(opened)
        plan = []
        for sf in opened:
            for name in sf.names():
                info = sf.tensors[name]
                if name in fp8.owner:
                    continue
                bits, reason = (bit_width, "default") if should_quantize(info, include_patterns, exclude_patterns) \
                    else (None, "not eligible (dtype, fewer than 2 dimensions or 1,024 elements, or excluded)")
                if bits is not None and bit_width_for is not None and not any(
                        fnmatch.fnmatchcase(name, p) for p in include_patterns):
                    bits, reason = bit_width_for(name, info)
                plan.append((sf, name, info, bits, reason))
        quantized_names = [name for _, name, _, bits, _ in plan if bits is not None]
        if not quantized_names and plan:
            raise ParameterError(f"{checkpoint.index or files[0]}: no tensor to quantize ({_why_none(plan)}); "
                                 "nothing written")
        dropped = {name: f"FP8 scale or marker of a quantized weight ({fp8.owner[name] or 'every FP8 weight'})"
                   for name in sorted(fp8.companions_of(quantized_names))}
        for sf in opened:  # the companions of carried weights stay with them, in checkpoint order
            for name in sf.names():
                if name in fp8.owner and name not in dropped:
                    plan.append((sf, name, sf.tensors[name], None, "FP8 scale of a carried weight"))
        plan.sort(key=lambda entry: (opened.index(entry[0]), entry[2].begin))
        jobs = [TensorJob(sf, name, info, bits, group_size, symmetric, method, markov_threshold, scheme, rotate,
                          fp8.scales.get(name))
                for sf, name, info, bits, _ in plan if bits is not None]
        job_of = {job.name: job for job in jobs}
        next_bits = NEXT_BIT_WIDTH[scheme]
        results = (executor or local_executor(num_threads))(jobs)
        with terminate_as_interrupt(), AqWriter(output_path, metadata, overwrite=overwrite,
                                                format_version=2 if scheme != "affine" else 1) as writer:
            for sf, name, info, bits, reason in plan:
                if bits is None:
                    writer.write_raw(name, sf.raw_bytes(name), info.dtype, info.shape)
                    carried[name] = reason
                else:
                    label = f"{sf.path.name}: layer {name!r}"
                    requested = bits
                    tensor, stats, layer_markov = next(results)
                    while min_accuracy is not None and stats.cosine < min_accuracy:
                        if not fallback or bits not in next_bits:
                            why = "fallback is off" if not fallback else "even at 8 bits"
                            raise AccuracyError(f"{label}: cosine similarity {stats.cosine:.4f} at {bits} bits is "
                                                f"below min_accuracy {min_accuracy} ({why})")
                        fallbacks.append({"layer": name, "from_bits": bits, "to_bits": next_bits[bits],
                                          "cosine": stats.cosine, "min_accuracy": min_accuracy,
                                          "reason": f"cosine {stats.cosine:.4f} < min_accuracy {min_accuracy}"})
                        bits = next_bits[bits]
                        tensor, stats, layer_markov = job_of[name].quantize(job_of[name].source_array(), num_threads, bits)
                    writer.write_quantized(name, tensor)
                    markov_raw[name] = layer_markov
                    layers[name] = {"shape": list(info.shape), "source_dtype": info.dtype, "bit_width": bits,
                                    "requested_bit_width": requested, "reason": reason, "scheme": tensor.scheme,
                                    "bits_per_weight": tensor.bits_per_weight,
                                    "bytes_before": info.nbytes, "bytes_after": tensor.nbytes,
                                    "cosine": stats.cosine, "relative_rmse": stats.relative_rmse,
                                    "max_abs_error": stats.max_abs_error}
                    quantized_source_bytes += info.nbytes
                    quantized_bytes += tensor.nbytes
                    quantized_elements += info.numel
                input_bytes += info.nbytes
                sf.release(name)
                done_bytes += info.nbytes
                if progress_callback is not None:
                    progress_callback(name, done_bytes / total_bytes)
    finally:
        for sf in opened:
            sf.close()
    input_bytes += sum(info.nbytes for sf in opened for name, info in sf.tensors.items() if name in dropped)
    seconds = time.perf_counter() - started
    output_bytes = os.path.getsize(output_path)
    cosines = [layer["cosine"] for layer in layers.values()]
    rmses = [layer["relative_rmse"] for layer in layers.values()]
    return {
        "input": [str(f) for f in files],
        "output": str(output_path),
        "layers_quantized": len(layers),
        "layers_carried": len(carried),
        "carried": carried,
        "dropped": dropped,
        "fallbacks": fallbacks,
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
                     "method": method, "min_accuracy": min_accuracy, "fallback": fallback, "scheme": scheme,
                     "rotate": rotate},
        "bits_per_weight": 8 * quantized_bytes / quantized_elements if quantized_elements else 0.0,
        "layers": layers,
        "warnings": warnings_out,
        "_markov": markov_raw,  # raw Markov metrics, taken out by ArrowQuantV2
    }
