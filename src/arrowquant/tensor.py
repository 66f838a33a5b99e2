"""NumPy side of the engine: dtypes, QuantizedTensor, and calls into the compiled core."""

from __future__ import annotations

import functools
import math
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import _core
from .errors import DataError, ParameterError
from .schemes import DEFAULT_SCHEME, KQUANT_BLOCK, bits_per_weight, kquant_bytes


@functools.cache
def bfloat16() -> np.dtype:
    """NumPy's bfloat16 dtype (ml_dtypes). Imported on first use: loading ml_dtypes takes about a
    second, which ``import arrowquant`` and every CLI command would otherwise pay."""
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)


def is_bfloat16(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is ml_dtypes' bfloat16 (told by name, so ml_dtypes need not be loaded)."""
    return dtype.name == "bfloat16"


class _SafetensorsDtypes(Mapping[str, np.dtype]):
    """safetensors dtype name -> numpy dtype (F8 types are read as raw bytes); BF16 is resolved
    through bfloat16() when first looked up."""

    _FIXED = {
        "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": None,
        "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
        "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
        "BOOL": np.dtype("?"), "F8_E4M3": np.dtype("u1"), "F8_E5M2": np.dtype("u1"),
    }

    def __getitem__(self, name: str) -> np.dtype:
        dtype = self._FIXED[name]
        return bfloat16() if dtype is None else dtype

    def __iter__(self) -> Iterator[str]:
        return iter(self._FIXED)

    def __len__(self) -> int:
        return len(self._FIXED)


SAFETENSORS_DTYPES: Mapping[str, np.dtype] = _SafetensorsDtypes()
QUANTIZABLE_DTYPES = ("F32", "F16", "BF16")
# Element type codes of the compiled core.
_ELEMENT_TYPE = {"F32": 0, "F16": 1, "BF16": 2}


def source_dtype_of(array: np.ndarray, dtype: Any = None) -> str:
    """The safetensors name of a quantizable array's dtype: F32, F16 or BF16.

    bfloat16 comes as an ml_dtypes.bfloat16 array, or as uint16 with dtype="bfloat16"."""
    if dtype is not None:
        if str(dtype) != "bfloat16":
            raise ParameterError(f"dtype may only be 'bfloat16' (to read a uint16 array as bfloat16); got {dtype!r}")
        if array.dtype not in (np.dtype(np.uint16), np.dtype(np.int16)) and not is_bfloat16(array.dtype):
            raise ParameterError(f"dtype='bfloat16' needs a 2-byte array (uint16 or bfloat16); got {array.dtype}")
        return "BF16"
    if is_bfloat16(array.dtype):
        return "BF16"
    native = array.dtype.newbyteorder("=")
    if native == np.float32:
        return "F32"
    if native == np.float16:
        return "F16"
    raise ParameterError(
        f"weights must be float32, float16 or bfloat16; got {array.dtype} "
        "(convert with .astype(np.float32), or pass a uint16 array with dtype='bfloat16')")


def kernel_view(array: np.ndarray) -> np.ndarray:
    """A C-contiguous, aligned, native-endian view the kernels can read (a copy only if needed)."""
    if not array.flags.c_contiguous or not array.flags.aligned or not array.dtype.isnative:
        array = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("="), copy=False)
        if not array.flags.aligned:
            array = array.copy()
    if array.dtype.itemsize == 2 and array.dtype != np.float16:
        array = array.view(np.uint16)  # bfloat16 bits
    return array


def to_dtype(values: np.ndarray, dtype: Any) -> np.ndarray:
    """float32 -> the requested float dtype (float32, float16, bfloat16 / 'bfloat16' / 'BF16', or a safetensors name)."""
    if isinstance(dtype, str) and dtype in SAFETENSORS_DTYPES:
        dtype = SAFETENSORS_DTYPES[dtype]
    target = bfloat16() if str(dtype) in ("bfloat16", "BF16") else np.dtype(dtype)
    if target not in (np.dtype(np.float32), np.dtype(np.float16)) and not is_bfloat16(target):
        raise ParameterError(f"dtype must be float32, float16 or bfloat16; got {dtype!r}")
    return values if target == np.float32 else values.astype(target)


class QuantizedTensor:
    """One quantized tensor in arrowquant's packed format (docs/format.md).

    ``quantized_data``, ``scales`` and ``zero_points`` are NumPy arrays over the buffers the
    kernels wrote (or over a memory-mapped .aq file): no copies. ``scheme`` is "affine" (format
    version 1: float32 scale and zero point per group) or "kquant" (version 2: k-quant
    super-blocks of 256 values that hold their own parameters, so ``scales`` and ``zero_points``
    are empty and ``group_size`` is 256; ``rotation`` "hadamard256" or "none")."""

    __slots__ = ("quantized_data", "scales", "zero_points", "shape", "bit_width", "group_size", "symmetric",
                 "source_dtype", "scheme", "rotation")

    def __init__(self, quantized_data: np.ndarray, scales: np.ndarray, zero_points: np.ndarray,
                 shape: Sequence[int], bit_width: int, group_size: int, symmetric: bool,
                 source_dtype: str = "F32", scheme: str = DEFAULT_SCHEME, rotation: str = "none") -> None:
        self.quantized_data = quantized_data
        self.scales = scales
        self.zero_points = zero_points
        self.shape = tuple(int(d) for d in shape)
        self.bit_width = int(bit_width)
        self.group_size = int(group_size)
        self.symmetric = bool(symmetric)
        self.source_dtype = source_dtype
        self.scheme = scheme
        self.rotation = rotation

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of codes plus scales plus zero points."""
        return self.quantized_data.nbytes + self.scales.nbytes + self.zero_points.nbytes

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight, every parameter and any row padding included."""
        return bits_per_weight(self.nbytes, self.numel)

    def dequantize(self, dtype: Any = np.float32) -> np.ndarray:
        """Decode to an array of the original shape: x = (q - zero_point) * scale."""
        return to_dtype(dequantize_tensors([self], ["tensor"])[0], dtype).reshape(self.shape)

    def __repr__(self) -> str:
        scheme = "" if self.scheme == DEFAULT_SCHEME else f"scheme={self.scheme!r}, rotation={self.rotation!r}, "
        return (f"QuantizedTensor(shape={self.shape}, {scheme}bit_width={self.bit_width}, group_size={self.group_size}, "
                f"symmetric={self.symmetric}, source_dtype={self.source_dtype!r}, nbytes={self.nbytes}, "
                f"bits_per_weight={self.bits_per_weight:.4g})")


class ErrorStats:
    """Original vs dequantized comparison of one tensor (sums in float64, from the kernels)."""

    __slots__ = ("sum_xx", "sum_yy", "sum_xy", "sum_dd", "max_abs_error", "count")

    def __init__(self, sum_xx, sum_yy, sum_xy, sum_dd, max_abs_error, count):
        self.sum_xx, self.sum_yy, self.sum_xy, self.sum_dd = sum_xx, sum_yy, sum_xy, sum_dd
        self.max_abs_error, self.count = max_abs_error, count

    @property
    def cosine(self) -> float:
        """Cosine similarity; 1.0 when both are all zero, 0.0 when exactly one is."""
        if self.sum_xx == 0 and self.sum_yy == 0:
            return 1.0
        if self.sum_xx == 0 or self.sum_yy == 0:
            return 0.0
        return float(min(1.0, self.sum_xy / math.sqrt(self.sum_xx * self.sum_yy)))

    @property
    def relative_rmse(self) -> float:
        """RMSE / RMS(original) (0.0 for an all-zero original that decodes to zeros)."""
        if self.sum_xx == 0:
            return 0.0 if self.sum_dd == 0 else math.inf
        return math.sqrt(self.sum_dd / self.sum_xx)

    @property
    def rmse(self) -> float:
        return math.sqrt(self.sum_dd / self.count) if self.count else 0.0


def quantize_arrays(arrays: Sequence[np.ndarray], source_dtypes: Sequence[str], labels: Sequence[str], *,
                    bit_width: int, group_size: int, symmetric: bool, num_threads: int | None,
                    method: str = "rtn", with_stats: bool = False, markov_threshold: float = 0.3,
                    scheme: str = DEFAULT_SCHEME, rotate: bool = True
                    ) -> list[tuple[QuantizedTensor, ErrorStats | None, tuple]]:
    """Quantize arrays in one call of the core (GIL released, layers spread over the pool).

    Per array: the QuantizedTensor, its error statistics (if asked for) and its raw Markov
    metrics (see markov.py). ``rotate`` applies to the kquant scheme only."""
    views = [kernel_view(a) for a in arrays]
    if scheme == "kquant":
        return _quantize_kquant(arrays, views, source_dtypes, labels, bit_width=bit_width, method=method,
                                num_threads=num_threads, with_stats=with_stats, rotate=rotate)
    results = _core.quantize_arrays(views, [_ELEMENT_TYPE[d] for d in source_dtypes], list(labels), bit_width,
                                    group_size, symmetric, method, num_threads or 0, with_stats, markov_threshold)
    out = []
    for array, dtype, (packed, scales, zero_points, stats, markov) in zip(arrays, source_dtypes, results):
        tensor = QuantizedTensor(packed, scales, zero_points, array.shape, bit_width, group_size, symmetric, dtype)
        out.append((tensor, ErrorStats(*stats) if stats is not None else None, markov))
    return out


# The Markov metrics of a tensor without float group parameters (kquant): no boundaries.
NO_MARKOV = (0, 0.0, 0.0, 0.0, 0, 0, [])
_EMPTY_PARAMS = np.zeros(0, np.float32)
_EMPTY_PARAMS.flags.writeable = False


def _quantize_kquant(arrays, views, source_dtypes, labels, *, bit_width, method, num_threads, with_stats, rotate):
    # The format's kquant geometry: the flattened tensor as one row.
    results = _core.kquant_encode_arrays([v.reshape(-1) for v in views], [_ELEMENT_TYPE[d] for d in source_dtypes],
                                         [1] * len(views), [v.size for v in views], list(labels), bit_width,
                                         rotate, method, num_threads or 0, with_stats)
    rotation = "hadamard256" if rotate else "none"
    return [(QuantizedTensor(encoded, _EMPTY_PARAMS, _EMPTY_PARAMS, array.shape, bit_width, KQUANT_BLOCK, False, dtype,
                             "kquant", rotation),
             ErrorStats(*stats) if stats is not None else None, NO_MARKOV)
            for array, dtype, (encoded, stats) in zip(arrays, source_dtypes, results)]


def check_shape(shape: Sequence[Any], label: str, itemsize: int = 4) -> tuple[int, ...]:
    """A shape NumPy can hold: non-negative integers whose non-zero product (which NumPy checks
    even when another dimension is 0) times the item size fits in 63 bits."""
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise DataError(f"{label}: shape {list(shape)} must be non-negative integers")
    product = math.prod(int(d) for d in shape if d)
    if product * itemsize >= 2**63:
        raise DataError(f"{label}: shape {list(shape)} has a negative dimension or more elements than fit in 64 bits")
    return tuple(int(d) for d in shape)


def check_text(value: str, what: str) -> str:
    """A name that every format we write can hold: a str encodable as UTF-8 (no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{what} {value!r} is not valid Unicode (a lone surrogate); names must be UTF-8 text") from None
    return value


def check_quantized(t: QuantizedTensor, label: str) -> QuantizedTensor:
    """Every length and parameter of a quantized tensor against its shape (docs/format.md), so that
    no decoder, compiled or torch, reads past a buffer: one DataError naming ``label`` otherwise."""
    shape = check_shape(t.shape, label)
    numel = math.prod(shape)
    if t.scheme == "kquant":
        if t.rotation not in ("none", "hadamard256"):
            raise DataError(f"{label}: unknown rotation {t.rotation!r} (expected 'none' or 'hadamard256')")
        if t.bit_width not in (2, 3, 4, 5, 6, 8) or t.group_size != KQUANT_BLOCK:
            raise DataError(f"{label}: a kquant tensor has bit_width 2, 3, 4, 5, 6 or 8 and group_size {KQUANT_BLOCK}; "
                            f"found bit_width {t.bit_width} and group_size {t.group_size}")
        data, groups = kquant_bytes(t.bit_width, shape), 0
    elif t.scheme == DEFAULT_SCHEME:
        if t.bit_width not in (2, 4, 8) or not 16 <= t.group_size <= 4096 or t.group_size & (t.group_size - 1):
            raise DataError(f"{label}: an affine tensor has bit_width 2, 4 or 8 and a power-of-two group_size from 16 "
                            f"to 4096; found bit_width {t.bit_width} and group_size {t.group_size}")
        rows = shape[0] if len(shape) >= 2 else 1
        cols = numel // rows if rows else 0
        groups = rows * -(-cols // t.group_size)
        data = -(-numel * t.bit_width // 8)
    else:
        raise DataError(f"{label}: unknown scheme {t.scheme!r} (expected 'affine' or 'kquant')")
    found = (t.quantized_data.nbytes, t.scales.size, t.zero_points.size)
    if found != (data, groups, groups):
        raise DataError(f"{label}: holds {found[0]} bytes of codes, {found[1]} scales and {found[2]} zero points, but "
                        f"shape {list(shape)} at {t.bit_width} bits ({t.scheme}, group {t.group_size}) needs {data}, "
                        f"{groups} and {groups}")
    return t


def dequantize_tensors(tensors: Iterable[QuantizedTensor], labels: Sequence[str],
                       num_threads: int | None = None, outputs: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """Flat float32 arrays, one per tensor (every length checked against shape and bits first).

    ``outputs``: writable, C-contiguous float32 arrays of exactly each tensor's element count to
    decode into (a buffer reused across calls saves allocating and first-touching a new one);
    they are returned."""
    tensors = list(tensors)
    labels = list(labels)
    for t, label in zip(tensors, labels):
        check_shape(t.shape, label)
    if outputs is not None:
        outputs = list(outputs)
        if len(outputs) != len(tensors) or not all(isinstance(o, np.ndarray) and o.dtype == np.float32 and
                                                   o.flags.c_contiguous and o.flags.writeable for o in outputs):
            raise ParameterError("outputs must be one writable, C-contiguous float32 array per tensor")
        flat = [o.reshape(-1) for o in outputs]
        for i, t in enumerate(tensors):
            if t.scheme == "kquant":
                _dequantize_kquant([t], [labels[i]], num_threads, [flat[i]])
            else:
                _core.dequantize_arrays([np.ascontiguousarray(t.quantized_data, np.uint8)],
                                        [np.ascontiguousarray(t.scales, np.float32)],
                                        [np.ascontiguousarray(t.zero_points, np.float32)], [list(t.shape)],
                                        [t.bit_width], [t.group_size], [labels[i]], num_threads or 0, [flat[i]])
        return flat
    if any(t.scheme != DEFAULT_SCHEME for t in tensors):
        kquant = [i for i, t in enumerate(tensors) if t.scheme == "kquant"]
        affine = [i for i, t in enumerate(tensors) if t.scheme == DEFAULT_SCHEME]
        unknown = [labels[i] for i, t in enumerate(tensors) if t.scheme not in ("kquant", DEFAULT_SCHEME)]
        if unknown:
            raise DataError(f"{unknown[0]}: unknown scheme {tensors[labels.index(unknown[0])].scheme!r} "
                            "(expected 'affine' or 'kquant')")
        out: list[np.ndarray] = [None] * len(tensors)  # type: ignore[list-item]
        for i, array in zip(kquant, _dequantize_kquant([tensors[i] for i in kquant], [labels[i] for i in kquant],
                                                       num_threads)):
            out[i] = array
        for i, array in zip(affine, dequantize_tensors([tensors[i] for i in affine], [labels[i] for i in affine],
                                                       num_threads)):
            out[i] = array
        return out
    return _core.dequantize_arrays(
        [np.ascontiguousarray(t.quantized_data, np.uint8) for t in tensors],
        [np.ascontiguousarray(t.scales, np.float32) for t in tensors],
        [np.ascontiguousarray(t.zero_points, np.float32) for t in tensors],
        [list(t.shape) for t in tensors], [t.bit_width for t in tensors], [t.group_size for t in tensors],
        list(labels), num_threads or 0)


def _dequantize_kquant(tensors: list[QuantizedTensor], labels: list[str], num_threads: int | None,
                       outputs: list[np.ndarray] | None = None) -> list[np.ndarray]:
    for t, label in zip(tensors, labels):
        if t.rotation not in ("none", "hadamard256"):
            raise DataError(f"{label}: unknown rotation {t.rotation!r} (expected 'none' or 'hadamard256')")
        if t.bit_width not in (2, 3, 4, 5, 6, 8) or t.group_size != KQUANT_BLOCK:
            raise DataError(f"{label}: a kquant tensor has bit_width 2, 3, 4, 5, 6 or 8 and group_size {KQUANT_BLOCK}; "
                            f"found bit_width {t.bit_width} and group_size {t.group_size}")
        if t.scales.size or t.zero_points.size:
            raise DataError(f"{label}: a kquant tensor has no scales or zero points; found {t.scales.size} and "
                            f"{t.zero_points.size}")
        expected = kquant_bytes(t.bit_width, t.shape)
        if t.quantized_data.nbytes != expected:
            raise DataError(f"{label}: holds {t.quantized_data.nbytes} bytes but shape {list(t.shape)} at "
                            f"{t.bit_width} bits (kquant) needs {expected}")
    return _core.kquant_decode_arrays([np.ascontiguousarray(t.quantized_data, np.uint8).reshape(-1) for t in tensors],
                                      [1] * len(tensors), [t.numel for t in tensors], [t.bit_width for t in tensors],
                                      [t.rotation == "hadamard256" for t in tensors], labels, num_threads or 0,
                                      outputs or [])
