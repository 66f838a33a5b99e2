"""Encoding one array into a GGUF type with its error statistics, and the report of one written
file: what every GGUF sink shares (safetensors sources in convert.py, GGUF sources in
requantize.py)."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .. import _core
from ..tensor import QUANTIZABLE_DTYPES

_ELEMENT = {"F32": 0, "F16": 1, "BF16": 2}
_STATS_CHUNK = 1 << 20  # elements: a multiple of every block size


def file_report(out: Path, arch: str, prefix: str, dropped: dict[str, str], size: int, tensors: dict, stored_names,
                decisions, component: str, started: float) -> dict[str, Any]:
    """What convert reports of one written GGUF file (``dropped``: tensor -> why it was left out)."""
    fallbacks = [{"tensor": s, "from_type": d.fallback_from.name, "to_type": d.type.name, "reason": d.reason}
                 for s, d in zip(stored_names, decisions) if d.fallback_from is not None]
    input_bytes = sum(t["bytes_before"] for t in tensors.values())
    narrowed = [s for s, t in tensors.items() if t["source_dtype"] == "F64"]
    warnings_out = [f"{out}: {len(narrowed)} F64 tensors narrowed to float32 first (GGUF runtimes hold no F64 "
                    "weights): " + ", ".join(narrowed[:3]) + (", ..." if len(narrowed) > 3 else "")] if narrowed else []
    for message in warnings_out:
        warnings.warn(message, UserWarning, stacklevel=3)
    return {"output": str(out), "architecture": arch, "prefix_stripped": prefix, "tensors_dropped": list(dropped),
            "why_dropped": dropped, "warnings": warnings_out,
            "input_bytes": input_bytes, "output_bytes": size,
            "compression_ratio": input_bytes / size if size else 0.0, "tensors": tensors, "fallbacks": fallbacks,
            "component": component, "seconds": time.perf_counter() - started}


def encoder_name(method: str, decision, importance) -> str:
    """The encoder a tensor gets: ggml's importance-weighted quantizer with an imatrix entry, the
    search where the type has one, ggml's reference quantizer otherwise."""
    if importance is not None:
        return "ggml-imatrix"
    return method if decision.type.has_search else "ggml"


def encode_array(array: np.ndarray, dtype: str, gguf, label: str, num_threads: int | None, with_stats: bool,
                 method: str, importance: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """The GGUF bytes of ``array`` (F64, F32, F16 or BF16 values, ``dtype`` naming which) in type
    ``gguf``, and, if asked, the relative RMSE and cosine of its decoded values to ``array``. With
    ``importance`` (one weight per column: an imatrix entry) ggml's importance-weighted quantizer
    writes it, as llama-quantize --imatrix does."""
    return encode_pieces([array], array.size, dtype, gguf, label, num_threads, with_stats, method, importance)


def encode_pieces(pieces: Iterable[np.ndarray], size: int, dtype: str, gguf, label: str, num_threads: int | None,
                  with_stats: bool, method: str,
                  importance: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """encode_array of an array given as consecutive pieces of whole rows (``size`` values in all,
    each piece made only when the one before is encoded, as an FP8 tensor is widened): the same
    bytes, since every GGUF type encodes each row on its own, and the statistics of the whole."""
    weights = [importance] if importance is not None and gguf.quantized else []
    encoded = None
    sums = np.zeros(4)  # x.x, (x - y).(x - y), x.y, y.y over the whole array
    done = 0
    for piece in pieces:
        if dtype == "F64":
            piece, dtype = piece.astype(np.float32), "F32"
        flat = piece.reshape(-1)
        [part] = _core.gguf_encode_arrays([flat.view(np.uint16) if dtype in ("F16", "BF16") else flat],
                                          [_ELEMENT[dtype]], [gguf.id], [label], num_threads or 0, method, weights)
        if flat.size == size:  # the whole array in one piece: its bytes as the kernels return them
            encoded = part
        else:
            if encoded is None:
                encoded = np.empty(gguf.encoded_bytes(size), np.uint8)
            at = gguf.encoded_bytes(done)
            encoded[at:at + part.size] = part
        if with_stats and gguf.quantized and dtype in QUANTIZABLE_DTYPES:
            sums += _error_sums(flat, part, gguf, label, num_threads)
        done += flat.size
    if done != size:
        raise ValueError(f"{label}: pieces of {done} values for a tensor of {size}")
    if encoded is None:  # no values at all
        encoded = np.empty(0, np.uint8)
    stats: dict[str, float] = {}
    if with_stats and gguf.quantized and dtype in QUANTIZABLE_DTYPES:
        xx, dd, xy, yy = (float(v) for v in sums)
        stats = {"relative_rmse": math.sqrt(dd / xx) if xx else 0.0,
                 "cosine": xy / math.sqrt(xx * yy) if xx and yy else (1.0 if xx == yy else 0.0)}
    return encoded, stats


def _error_sums(source: np.ndarray, encoded: np.ndarray, gguf, label: str, num_threads: int | None) -> np.ndarray:
    """x.x, (x - y).(x - y), x.y and y.y of ``source`` and its decoded ``encoded`` bytes, a chunk
    at a time (bounded memory), summed in float64 so that a tensor's statistics do not depend on
    how it was cut into pieces."""
    xx = dd = xy = yy = 0.0
    for start in range(0, source.size, _STATS_CHUNK):
        x = source[start:start + _STATS_CHUNK].astype(np.float64)
        chunk = encoded[gguf.encoded_bytes(start):gguf.encoded_bytes(start + x.size)]
        [y] = _core.gguf_decode_arrays([chunk], [gguf.id], [x.size], [label], num_threads or 0)
        y = y.astype(np.float64)
        diff = x - y
        # numpy's own pairwise sums, not BLAS dot products: BLAS may split a sum over threads
        # differently in each process, and a Ray worker must report the same figures as here.
        xx, dd = xx + float(np.sum(x * x)), dd + float(np.sum(diff * diff))
        xy, yy = xy + float(np.sum(x * y)), yy + float(np.sum(y * y))
    return np.array([xx, dd, xy, yy])
