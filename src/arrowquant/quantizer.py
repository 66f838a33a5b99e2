"""The user-facing quantizer over Arrow data."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa

from . import _core
from ._c_data import call_with_batches, without_views
from . import markov
from .errors import ColumnTypeError, DataError, ParameterError
from .schemes import DEFAULT_PIPELINE_METHODS, DEFAULT_SCHEME, check_bits_for_scheme, check_rotate, check_scheme
from .validation import (BIT_WIDTHS, DEFAULT_METHOD, METHODS, MODES,  # noqa: F401
                         check_group_size, check_method, check_mode, check_num_threads, check_symmetric)
from .tensor import SAFETENSORS_DTYPES, QuantizedTensor, check_shape, quantize_arrays, source_dtype_of

# quantize_batch_with_progress hands the core this many weights at a time, then reports.
_PROGRESS_CHUNK_WEIGHTS = 1 << 20

# Columns of the quantize input table (the output schema is built by the core).
_INPUT_DOC = "a table with columns layer_name (string), weights (list<float32|float16>) and optional shape (list<int64>)"


def _as_batches(data: Any, what: str) -> tuple[list[pa.RecordBatch], pa.Schema]:
    """Record batches of a Table, RecordBatch or any Arrow PyCapsule producer (polars, DuckDB,
    nanoarrow, ...), without copying; only view-layout columns (string_view, list_view) are
    converted to the classic layouts the core reads."""
    batches, schema = _raw_batches(data, what)
    batches = [without_views(b) for b in batches]
    return batches, (batches[0].schema if batches else schema)


def _raw_batches(data: Any, what: str) -> tuple[list[pa.RecordBatch], pa.Schema]:
    if isinstance(data, pa.Table):
        table = data
    elif isinstance(data, pa.RecordBatch):
        return [data], data.schema
    elif hasattr(data, "__arrow_c_stream__"):
        table = pa.table(data)
    elif hasattr(data, "__arrow_c_array__"):
        batch = pa.record_batch(data)
        return [batch], batch.schema
    else:
        raise ColumnTypeError(f"{what} must be {_INPUT_DOC} (pyarrow Table/RecordBatch or an Arrow PyCapsule "
                              f"producer); got {type(data).__name__}")
    batches = table.to_batches()
    if not batches:
        # Keep the schema flowing through the core so an empty table is validated and gets the full output schema.
        batches = [pa.RecordBatch.from_pylist([], schema=table.schema)]
    return batches, table.schema


def _carried_rows(batch: pa.RecordBatch) -> np.ndarray:
    """Which rows hold an unquantized tensor: group_size 0 in a table that says what each row's
    bytes are (a source_dtype column, as in .aq files); elsewhere group_size 0 is invalid."""
    names = batch.schema.names
    if "group_size" not in names or "source_dtype" not in names or \
            not pa.types.is_integer(batch.schema.field("group_size").type):
        return np.zeros(batch.num_rows, bool)
    return batch.column("group_size").to_numpy(zero_copy_only=False) == 0


def _decode_carried(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Rows stored as raw bytes (group_size 0) -> float32 weights, from their source_dtype."""
    names = batch.column("layer_name").to_pylist()
    weights, shapes = [], []
    for i, (data, dtype, shape) in enumerate(zip(batch.column("quantized_data"), batch.column("source_dtype"),
                                                 batch.column("shape"))):
        label = f"layer {names[i]!r}"
        dtype, shape = dtype.as_py(), shape.as_py()
        if dtype not in SAFETENSORS_DTYPES or dtype.startswith("F8"):
            raise DataError(f"{label}: stored unquantized as {dtype!r}, which has no float32 value here "
                            f"(expected one of F64, F32, F16, BF16 or an integer/bool type)")
        shape = check_shape(shape or [], label, SAFETENSORS_DTYPES[dtype].itemsize)
        raw = data.as_buffer() if data.is_valid else None
        expected = math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize
        if raw is None or raw.size != expected:
            raise DataError(f"{label}: holds {0 if raw is None else raw.size} bytes but shape {list(shape)} of {dtype} "
                            f"needs {expected}")
        weights.append(np.frombuffer(raw, SAFETENSORS_DTYPES[dtype]).astype(np.float32))
        shapes.append(list(shape))
    return pa.record_batch({"layer_name": pa.array(names, pa.string()),
                            "weights": pa.array(weights, pa.large_list(pa.float32())),
                            "shape": pa.array(shapes, pa.list_(pa.int64()))})


class ArrowQuantV2:
    """Group-wise quantizer of weight tensors held in Arrow tables (one row per layer).

    Args:
        mode: "diffusion" or "base" (which layers keep more precision in the model pipelines).
        group_size: elements per quantization group along each row (power of two, 16..4096).
        symmetric: symmetric (zero point fixed at 2^(b-1)) or asymmetric (min/max) groups.
        num_threads: worker threads; None uses every core.
        method: "rtn" (min/max rounding) or "search" (least-squares search over candidate scales:
            lower error at the same size, never worse than rtn for any group; see docs/search.md).
            None: "rtn" for quantize_arrow / quantize / quantize_batch; for
            quantize_from_safetensors and the model pipelines "search" with the affine scheme and
            "rtn" (ggml's reference rounding; at 4 and 5 bits a fast fit of the same error or
            lower, 18x faster than search) with kquant.
        scheme: "affine" (format version 1: bit widths 2, 4, 8 with a float32 scale and zero
            point per group of ``group_size``) or "kquant" (version 2: bit widths 2, 3, 4, 5, 6, 8
            in k-quant super-blocks of 256 values with their parameters inside, 2.625 to 8.5 bits
            per weight; ``group_size`` and ``symmetric`` do not apply). See docs/format.md.
        rotate: kquant only: rotate each block of 256 values of a row (randomised Hadamard) before
            coding, which lowers the error of heavy-tailed (real) weights at the same size.
    """

    def __init__(self, mode: str = "diffusion", group_size: int = 128, symmetric: bool = False,
                 num_threads: int | None = None, method: str | None = None,
                 markov_threshold: float = markov.DEFAULT_THRESHOLD, scheme: str = DEFAULT_SCHEME,
                 rotate: bool = True) -> None:
        self.mode = check_mode(mode)
        self.scheme = check_scheme(scheme)
        self.rotate = check_rotate(rotate)
        self.group_size = check_group_size(group_size)
        self.symmetric = check_symmetric(symmetric)
        self.num_threads = check_num_threads(num_threads)
        self.method = None if method is None else check_method(method)
        if isinstance(markov_threshold, bool) or not isinstance(markov_threshold, (int, float)) or not markov_threshold > 0:
            raise ParameterError(f"markov_threshold must be a positive number; got {markov_threshold!r}")
        self.markov_threshold = float(markov_threshold)
        self._markov: tuple[list, list] | None = None

    def get_markov_metrics(self) -> dict | None:
        """Smoothness of the quantization parameters of the most recent quantization (per layer and
        overall; see arrowquant.markov for the definitions), or None before any quantization."""
        return None if self._markov is None else markov.summarize(markov.from_raw(*self._markov))

    def _record_markov(self, names: list[str], raws: list) -> None:
        # Plain Python values only (names as str, the core's tuples of floats), never an Arrow or
        # NumPy object that would keep an input or output alive; dictionaries are built on demand.
        self._markov = (list(names), list(raws))

    def __repr__(self) -> str:
        scheme = "" if self.scheme == DEFAULT_SCHEME else f", scheme={self.scheme!r}, rotate={self.rotate}"
        return (f"ArrowQuantV2(mode={self.mode!r}, group_size={self.group_size}, symmetric={self.symmetric}, "
                f"num_threads={self.num_threads}, method={self.method!r}{scheme})")

    def _scheme(self, scheme: Any, rotate: Any) -> tuple[str, bool]:
        return (self.scheme if scheme is None else check_scheme(scheme),
                self.rotate if rotate is None else check_rotate(rotate))

    def _options(self, bit_width: Any, group_size: Any, symmetric: Any, method: Any = None,
                 default_method: str = DEFAULT_METHOD, scheme: str = DEFAULT_SCHEME) -> tuple[int, int, bool, str, int]:
        if method is not None:
            method = check_method(method)
        return (
            check_bits_for_scheme(bit_width, scheme),
            self.group_size if group_size is None else check_group_size(group_size),
            self.symmetric if symmetric is None else check_symmetric(symmetric),
            method or self.method or default_method,
            self.num_threads or 0,
        )

    def quantize_arrow(self, table: Any, bit_width: int = 4, *, group_size: int | None = None,
                       symmetric: bool | None = None, method: str | None = None, scheme: str | None = None,
                       rotate: bool | None = None) -> pa.Table:
        """Quantize every layer of a table; returns a table of the quantized schema (docs/format.md):
        version 1 for the affine scheme, version 2 (plus ``scheme`` and ``rotation`` columns) for kquant."""
        scheme, rotate = self._scheme(scheme, rotate)
        options = self._options(bit_width, group_size, symmetric, method, scheme=scheme)
        batches, _ = _as_batches(table, "table")
        results, raw_markov = call_with_batches(_core.quantize_batches, batches, *options, self.markov_threshold,
                                                scheme, rotate)
        out = pa.Table.from_batches(results)
        self._record_markov(out.column("layer_name").to_pylist(), raw_markov)
        return out

    def quantize_arrow_batch(self, batch: Any, bit_width: int = 4, *, group_size: int | None = None,
                             symmetric: bool | None = None, method: str | None = None, scheme: str | None = None,
                             rotate: bool | None = None) -> pa.RecordBatch:
        """Quantize one record batch; returns one record batch."""
        scheme, rotate = self._scheme(scheme, rotate)
        options = self._options(bit_width, group_size, symmetric, method, scheme=scheme)
        if isinstance(batch, pa.Table) or (hasattr(batch, "__arrow_c_stream__") and not hasattr(batch, "__arrow_c_array__")):
            raise ColumnTypeError(f"quantize_arrow_batch takes one record batch; got {type(batch).__name__} "
                                  "(use quantize_arrow for tables and streams)")
        batches, _ = _as_batches(batch, "batch")
        results, raw_markov = call_with_batches(_core.quantize_batches, batches, *options, self.markov_threshold,
                                                scheme, rotate)
        self._record_markov(results[0].column("layer_name").to_pylist(), raw_markov)
        return results[0]

    def quantize(self, weights: np.ndarray, bit_width: int = 4, group_size: int | None = None,
                 symmetric: bool | None = None, dtype: str | None = None, method: str | None = None, *,
                 scheme: str | None = None, rotate: bool | None = None) -> QuantizedTensor:
        """Quantize one array (any shape; float32, float16 or bfloat16).

        bfloat16 is an ``ml_dtypes.bfloat16`` array, or a uint16 array with ``dtype="bfloat16"``.
        Half-precision inputs are widened inside the kernels, never copied to float32 first."""
        return self.quantize_batch({"weights": weights}, bit_width, group_size, symmetric,
                                   dtypes={"weights": dtype}, method=method, scheme=scheme, rotate=rotate)["weights"]

    def quantize_batch(self, weights_dict: Mapping[str, np.ndarray], bit_width: int = 4,
                       group_size: int | None = None, symmetric: bool | None = None,
                       dtypes: Mapping[str, str | None] | None = None, method: str | None = None, *,
                       scheme: str | None = None, rotate: bool | None = None) -> dict[str, QuantizedTensor]:
        """Quantize many arrays in one call: a dict name -> QuantizedTensor, in input order.

        The layers are spread over the thread pool with the GIL released."""
        return self.quantize_batch_with_progress(weights_dict, bit_width, None, group_size, symmetric,
                                                 dtypes=dtypes, method=method, scheme=scheme, rotate=rotate)

    def quantize_batch_with_progress(self, weights_dict: Mapping[str, np.ndarray], bit_width: int = 4,
                                     progress_callback: Callable[[str, float], Any] | None = None,
                                     group_size: int | None = None, symmetric: bool | None = None,
                                     dtypes: Mapping[str, str | None] | None = None, method: str | None = None, *,
                                     scheme: str | None = None, rotate: bool | None = None
                                     ) -> dict[str, QuantizedTensor]:
        """As quantize_batch, calling ``progress_callback(layer_name, fraction_done)`` after each layer.

        fraction_done is the share of all weights quantized so far (1.0 after the last layer). The
        callback runs on the calling thread, never on a worker. If it raises, the work stops and
        the exception propagates; nothing partial is returned."""
        scheme, rotate = self._scheme(scheme, rotate)
        bits, group, sym, meth, threads = self._options(bit_width, group_size, symmetric, method, scheme=scheme)
        if not isinstance(weights_dict, Mapping):
            raise ColumnTypeError(f"weights_dict must be a dict of name -> ndarray; got {type(weights_dict).__name__}")
        if progress_callback is not None and not callable(progress_callback):
            raise ParameterError(f"progress_callback must be callable; got {type(progress_callback).__name__}")
        dtypes = dtypes or {}
        names, arrays, source_dtypes = [], [], []
        for name, array in weights_dict.items():  # validate everything before any work
            if not isinstance(array, np.ndarray):
                raise ColumnTypeError(f"layer {name!r}: expected a numpy.ndarray; got {type(array).__name__}")
            try:
                source_dtypes.append(source_dtype_of(array, dtypes.get(name)))
            except ParameterError as e:
                raise ParameterError(f"layer {name!r}: {e}") from None
            names.append(name)
            arrays.append(array)
        labels = [f"layer {n!r}" for n in names]
        if progress_callback is None:
            chunks = [range(len(names))]
        else:
            chunks, start, weights_in_chunk = [], 0, 0
            for i, a in enumerate(arrays):
                weights_in_chunk += a.size
                if weights_in_chunk >= _PROGRESS_CHUNK_WEIGHTS or i == len(arrays) - 1:
                    chunks.append(range(start, i + 1))
                    start, weights_in_chunk = i + 1, 0
        total = sum(a.size for a in arrays) or 1
        done = 0
        results: dict[str, QuantizedTensor] = {}
        raw_markov = []
        for chunk in chunks:
            quantized = quantize_arrays([arrays[i] for i in chunk], [source_dtypes[i] for i in chunk],
                                        [labels[i] for i in chunk], bit_width=bits, group_size=group,
                                        symmetric=sym, method=meth, num_threads=threads,
                                        markov_threshold=self.markov_threshold, scheme=scheme, rotate=rotate)
            for i, (tensor, _, layer_markov) in zip(chunk, quantized):
                results[names[i]] = tensor
                raw_markov.append(layer_markov)
                done += arrays[i].size
                if progress_callback is not None:
                    progress_callback(names[i], done / total if arrays else 1.0)
        self._record_markov(names, raw_markov)
        return results

    def quantize_from_safetensors(self, safetensors_path: Any, output_path: Any, bit_width: int = 4,
                                  group_size: int | None = None,
                                  progress_callback: Callable[[str, float], Any] | None = None, *,
                                  symmetric: bool | None = None, include: Any = None, exclude: Any = None,
                                  method: str | None = None, overwrite: bool = False,
                                  variant: str | None = None, scheme: str | None = None,
                                  rotate: bool | None = None) -> dict:
        """Quantize a safetensors checkpoint (file, sharded index, or folder) into one .aq file.

        Floating tensors (F32/F16/BF16) with at least 2 dimensions and 1,024 elements are
        quantized; everything else is carried through byte for byte. ``include`` / ``exclude``
        are glob patterns (or lists of them) on tensor names that override that choice. Returns a
        report: layer counts, bytes, compression ratio, cosine / relative RMSE per layer and
        overall, seconds and throughput. ``scheme="kquant"`` writes a version-2 file (bit widths 2,
        3, 4, 5, 6, 8; docs/format.md). An existing output is replaced only with ``overwrite``;
        ``variant`` picks the weight files of a folder holding several (``*.fp16.safetensors``)."""
        from .checkpoint import quantize_checkpoint

        scheme, rotate = self._scheme(scheme, rotate)
        bits, group, sym, meth, threads = self._options(bit_width, group_size, symmetric, method,
                                                        default_method=DEFAULT_PIPELINE_METHODS[scheme], scheme=scheme)
        report = quantize_checkpoint(safetensors_path, output_path, bit_width=bits, group_size=group, symmetric=sym,
                                     method=meth, num_threads=threads, include=include, exclude=exclude,
                                     progress_callback=progress_callback, mode=self.mode, overwrite=overwrite,
                                     variant=variant, markov_threshold=self.markov_threshold, scheme=scheme,
                                     rotate=rotate)
        raw = report.pop("_markov")
        self._record_markov(list(raw), list(raw.values()))
        return report

    def quantize_diffusion_model(self, model_path: Any, output_path: Any, config: Any = None,
                                 progress_callback: Callable[[str, float], Any] | None = None, *,
                                 overwrite: bool = False, variant: str | None = None, ray: bool = False,
                                 allow_pickle: bool = False) -> dict:
        """Quantize a diffusers-style model (see arrowquant.quantize_diffusion_model) with this
        quantizer's mode; without a config, its group size, symmetry, threads and method are used."""
        from .diffusion import DiffusionQuantConfig, quantize_diffusion_model

        if config is None:
            config = DiffusionQuantConfig(group_size=self.group_size, symmetric=self.symmetric,
                                          num_threads=self.num_threads, method=self.method,
                                          scheme=self.scheme, rotate=self.rotate)
        report = quantize_diffusion_model(model_path, output_path, config, progress_callback, mode=self.mode,
                                          overwrite=overwrite, variant=variant, markov_threshold=self.markov_threshold,
                                          ray=ray, allow_pickle=allow_pickle)
        raw = report.pop("_markov")
        self._record_markov(list(raw), list(raw.values()))
        return report

    def dequantize_arrow(self, table: Any) -> pa.Table:
        """Decode a quantized table back to float32: columns layer_name, weights, shape.

        Rows stored unquantized (``group_size`` 0, as a .aq file read with plain pyarrow holds
        them: raw little-endian bytes of ``source_dtype``) are decoded from those bytes."""
        batches, _ = _as_batches(table, "table")
        return pa.Table.from_batches([self._dequantize_batch(b) for b in batches])

    def _dequantize_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        carried = _carried_rows(batch)
        if not carried.any():
            return call_with_batches(_core.dequantize_batches, [batch], self.num_threads or 0)[0][0]
        rows_q, rows_c = np.flatnonzero(~carried), np.flatnonzero(carried)
        parts = [(rows_c, _decode_carried(batch.take(pa.array(rows_c))))]
        if rows_q.size:
            parts.append((rows_q, call_with_batches(_core.dequantize_batches, [batch.take(pa.array(rows_q))],
                                                    self.num_threads or 0)[0][0]))
        weights_type = pa.large_list(pa.float32()) if any(
            pa.types.is_large_list(p.schema.field("weights").type) for _, p in parts) else pa.list_(pa.float32())
        schema = pa.schema([pa.field("layer_name", pa.string(), False), pa.field("weights", weights_type, False),
                            pa.field("shape", pa.list_(pa.int64()), False)])
        merged = pa.concat_tables([pa.Table.from_batches([p]).cast(schema) for _, p in parts]).combine_chunks()
        order = np.argsort(np.concatenate([rows for rows, _ in parts]), kind="stable")
        return merged.take(pa.array(order)).to_batches()[0]
