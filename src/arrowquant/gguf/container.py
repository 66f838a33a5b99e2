"""The GGUF container (version 3): a header, typed key-value metadata, tensor infos, then the
aligned tensor data. Written streaming (every size is known before the first byte of data, so
one tensor at a time), read memory-mapped with every offset and size checked before use.

Layout, little-endian: magic "GGUF", version u32, tensor count u64, key-value count u64; each
key-value as string key, value type u32, value; each tensor info as string name, n_dims u32,
dims u64 x n_dims (ggml order: the innermost, contiguous dimension first, i.e. NumPy's shape
reversed), type u32 (ggml type id), offset u64 (from the start of the data area, a multiple of
the alignment); padding to `general.alignment` (default 32); the data. Strings are u64 length +
UTF-8 bytes.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .. import _core
from ..errors import FileFormatError, ParameterError
from ..paths import atomic_file, open_input
from .types import GGUF_TYPES, GgufType, type_by_id

MAGIC = b"GGUF"
VERSION = 3
DEFAULT_ALIGNMENT = 32
# Readers (ggml's gguf.cpp) refuse more; so does ours, so a corrupt count cannot make us loop.
MAX_DIMS = 4
MAX_STRING_BYTES = 1 << 30

# Value types of the key-value section.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_SCALAR = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i", FLOAT32: "<f", BOOL: "<?",
           UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}


class Value:
    """A metadata value with an explicit GGUF type (plain Python values get a default type)."""

    __slots__ = ("type", "value", "item_type")

    def __init__(self, value_type: int, value: Any, item_type: int | None = None) -> None:
        self.type, self.value, self.item_type = value_type, value, item_type


def _typed(value: Any) -> Value:
    if isinstance(value, Value):
        return value
    if isinstance(value, bool):
        return Value(BOOL, value)
    if isinstance(value, int):
        return Value(UINT32 if 0 <= value < 2**32 else INT64, value)
    if isinstance(value, float):
        return Value(FLOAT32, value)
    if isinstance(value, str):
        return Value(STRING, value)
    if isinstance(value, (list, tuple)):
        items = [_typed(v) for v in value]
        item_type = items[0].type if items else INT32
        return Value(ARRAY, [v.value for v in items], item_type)
    raise ParameterError(f"GGUF metadata cannot hold a {type(value).__name__}: {value!r}")


def _string(s: str) -> bytes:
    data = s.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _value_bytes(v: Value) -> bytes:
    if v.type == STRING:
        return _string(v.value)
    if v.type == ARRAY:
        if v.item_type in _SCALAR and isinstance(v.value, np.ndarray):  # scores, token types: in one piece
            body = np.ascontiguousarray(v.value, dtype=_SCALAR[v.item_type]).tobytes()
        else:
            body = b"".join(_value_bytes(Value(v.item_type, item)) for item in v.value)
        return struct.pack("<IQ", v.item_type, len(v.value)) + body
    return struct.pack(_SCALAR[v.type], v.value)


class TensorSpec:
    """What the writer needs to know of a tensor before its data exists."""

    __slots__ = ("name", "shape", "type")

    def __init__(self, name: str, shape: tuple[int, ...], gguf_type: GgufType) -> None:
        self.name, self.shape, self.type = name, tuple(int(d) for d in shape), gguf_type

    @property
    def nbytes(self) -> int:
        return self.type.encoded_bytes(math.prod(self.shape))


def _pad(n: int, alignment: int) -> int:
    return -n % alignment


def write_gguf(path: Any, metadata: dict[str, Any], specs: list[TensorSpec], chunks: Iterable[Any], *,
               overwrite: bool = False, alignment: int = DEFAULT_ALIGNMENT) -> int:
    """Stream a GGUF file: ``specs`` in order, ``chunks`` yielding each tensor's encoded bytes in
    the same order. Published atomically (over an existing file only with ``overwrite``);
    returns the file's size."""
    path = Path(path)
    header, alignment = gguf_header(metadata, specs, alignment)
    with atomic_file(path, overwrite) as tmp, open(tmp, "wb") as f:
        f.write(header)
        write_tensor_data(f, path, specs, iter(chunks), alignment)
        size = f.tell()
    return size


def gguf_header(metadata: dict[str, Any], specs: list[TensorSpec],
                alignment: int = DEFAULT_ALIGNMENT) -> tuple[bytes, int]:
    """The header of a GGUF file holding ``specs`` (padded to the alignment) and that alignment."""
    if "general.alignment" in metadata:
        alignment = int(_typed(metadata["general.alignment"]).value)
    header = bytearray(MAGIC + struct.pack("<IQQ", VERSION, len(specs), len(metadata)))
    for key, value in metadata.items():
        v = _typed(value)
        header += _string(key) + struct.pack("<I", v.type) + _value_bytes(v)
    offset = 0
    for spec in specs:
        header += _string(spec.name) + struct.pack("<I", len(spec.shape))
        header += b"".join(struct.pack("<Q", d) for d in reversed(spec.shape))
        header += struct.pack("<IQ", spec.type.id, offset)
        offset += spec.nbytes + _pad(spec.nbytes, alignment)
    header += b"\0" * _pad(len(header), alignment)
    return bytes(header), alignment


def write_tensor_data(f, path: Path, specs: list[TensorSpec], chunks: Iterator[Any], alignment: int) -> None:
    """Each spec's bytes, taken from ``chunks`` in order and checked for size, padded."""
    for spec in specs:
        data = memoryview(next(chunks)).cast("B")
        if data.nbytes != spec.nbytes:
            raise FileFormatError(f"{path}: tensor {spec.name!r} produced {data.nbytes} bytes, expected {spec.nbytes}")
        f.write(data)
        f.write(b"\0" * _pad(spec.nbytes, alignment))


class GgufTensor:
    __slots__ = ("name", "shape", "type", "offset")

    def __init__(self, name: str, shape: tuple[int, ...], gguf_type: GgufType, offset: int) -> None:
        self.name, self.shape, self.type, self.offset = name, shape, gguf_type, offset

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.type.encoded_bytes(self.numel)


class _Cursor:
    """Reads the header with bounds checks: a lying count or length is an error, never a crash."""

    def __init__(self, data: memoryview, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise FileFormatError(f"{self.where}: truncated header (needs {n} bytes at offset {self.pos}, the file has "
                                  f"{len(self.data)})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self, what: str) -> str:
        n = self.unpack("<Q")
        if n > MAX_STRING_BYTES:
            raise FileFormatError(f"{self.where}: {what} claims {n} bytes")
        try:
            return bytes(self.take(n)).decode("utf-8")
        except UnicodeDecodeError:
            raise FileFormatError(f"{self.where}: {what} is not UTF-8") from None

    def value(self, value_type: int, key: str, depth: int = 0) -> Any:
        if value_type in _SCALAR:
            return self.unpack(_SCALAR[value_type])
        if value_type == STRING:
            return self.string(f"metadata {key!r}")
        if value_type == ARRAY and depth == 0:
            item_type, count = self.unpack("<I"), self.unpack("<Q")
            smallest = struct.calcsize(_SCALAR[item_type]) if item_type in _SCALAR else 8  # a string: its length
            if count * smallest > len(self.data) - self.pos:
                raise FileFormatError(f"{self.where}: metadata {key!r} claims {count} items, more than the "
                                      f"{len(self.data) - self.pos} bytes left can hold")
            if item_type in _SCALAR:
                values = np.frombuffer(self.take(smallest * count), _SCALAR[item_type])
                # Short arrays (shapes, ids) as lists; long ones (scores, token types, charsmaps) stay
                # NumPy arrays: a list of Python numbers costs about 15 times their bytes.
                return values.tolist() if count <= SMALL_ARRAY else values.copy()
            return [self.value(item_type, key, depth + 1) for _ in range(count)]
        raise FileFormatError(f"{self.where}: metadata {key!r} has unknown value type {value_type}")


# ComfyUI-GGUF's comfy.gguf.orig_shape holds a torch shape: a handful of dimensions, never dozens.
MAX_ORIG_DIMS = 8
# Numeric metadata arrays up to this many items are read as lists, longer ones as NumPy arrays.
SMALL_ARRAY = 64


class GgufFile:
    """A memory-mapped GGUF file (``arrowquant.gguf.open``): ``metadata``, ``tensors`` (name ->
    GgufTensor with NumPy-order shape and type), ``raw(name)`` (the encoded bytes, no copy) and
    ``dequantize(name)`` (float32, decoded by the compiled kernels, every supported type)."""

    def __init__(self, path: Any) -> None:
        self.path = Path(path)
        self._file = open_input(self.path, "a GGUF file")
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size < 24:
                raise FileFormatError(f"{self.path}: {size} bytes is too short for a GGUF file")
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self._parse(memoryview(self._map), size)
        except BaseException:
            self.close()
            raise

    def _parse(self, data: memoryview, size: int) -> None:
        where = str(self.path)
        c = _Cursor(data, where)
        if bytes(c.take(4)) != MAGIC:
            raise FileFormatError(f"{where}: not a GGUF file (no 'GGUF' magic)")
        version = c.unpack("<I")
        if version not in (2, 3):
            raise FileFormatError(f"{where}: GGUF version {version} is not supported (2 or 3)")
        n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
        if n_tensors > size or n_kv > size:
            raise FileFormatError(f"{where}: claims {n_tensors} tensors and {n_kv} metadata keys in {size} bytes")
        self.metadata: dict[str, Any] = {}
        self.value_types: dict[str, tuple[int, int | None]] = {}  # key -> (GGUF value type, array item type)
        for _ in range(n_kv):
            key = c.string("a metadata key")
            value_type = c.unpack("<I")
            item_type = struct.unpack_from("<I", data, c.pos)[0] if value_type == ARRAY and c.pos + 4 <= size else None
            self.metadata[key] = c.value(value_type, key)
            self.value_types[key] = (value_type, item_type)
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise FileFormatError(f"{where}: general.alignment {alignment!r} is not a power of two")
        infos = []
        for _ in range(n_tensors):
            name = c.string("a tensor name")
            n_dims = c.unpack("<I")
            if not 1 <= n_dims <= MAX_DIMS:
                raise FileFormatError(f"{where}: tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS})")
            dims = [c.unpack("<Q") for _ in range(n_dims)]
            type_id, offset = c.unpack("<I"), c.unpack("<Q")
            infos.append((name, tuple(reversed(dims)), type_id, offset))
        self.data_start = c.pos + _pad(c.pos, alignment)
        self.tensors: dict[str, GgufTensor] = {}
        for name, shape, type_id, offset in infos:
            at = f"{where}: tensor {name!r}"
            gguf_type = type_by_id(type_id)
            if gguf_type is None:
                raise FileFormatError(f"{at}: ggml type {type_id} is not one arrowquant reads "
                                      f"({', '.join(t.name for t in GGUF_TYPES)})")
            if name in self.tensors:
                raise FileFormatError(f"{at}: appears twice")
            if any(d <= 0 for d in shape) or math.prod(shape) >= 2**62:
                raise FileFormatError(f"{at}: shape {list(shape)} is not valid")
            if shape[-1] % gguf_type.block_size:
                raise FileFormatError(f"{at}: rows of {shape[-1]} are not a multiple of {gguf_type.name}'s block of "
                                      f"{gguf_type.block_size}")
            tensor = GgufTensor(name, shape, gguf_type, offset)
            if offset % alignment or self.data_start + offset + tensor.nbytes > size:
                raise FileFormatError(f"{at}: data [{offset}, +{tensor.nbytes}) lies outside the file's data area or "
                                      f"is not aligned to {alignment} (truncated file?)")
            self.tensors[name] = tensor
        # Two tensors sharing bytes is a damaged (or crafted) file: ggml's writer never does it.
        spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in self.tensors.values())
        for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
            if start < end:
                raise FileFormatError(f"{where}: tensors {first!r} and {second!r} overlap in the file's data area")

    def __enter__(self) -> "GgufFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_map", None) is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # arrays still view it; the mapping goes when they do
        self._file.close()

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    def typed_metadata(self) -> dict[str, Value]:
        """Every metadata entry with its GGUF value type, as a writer takes it back."""
        return {key: Value(self.value_types[key][0], value, self.value_types[key][1])
                for key, value in self.metadata.items()}

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    def raw(self, name: str) -> np.ndarray:
        """The tensor's encoded bytes as a read-only uint8 view of the mapping."""
        t = self._tensor(name)
        size = os.fstat(self._file.fileno()).st_size
        if size < self.data_start + t.offset + t.nbytes:  # truncated while mapped: no SIGBUS
            raise FileFormatError(f"{self.path}: tensor {name!r}: the file shrank to {size} bytes while being read")
        return np.frombuffer(self._map, np.uint8, count=t.nbytes, offset=self.data_start + t.offset)

    def _tensor(self, name: str) -> GgufTensor:
        if name not in self.tensors:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        return self.tensors[name]

    def dequantize(self, name: str, num_threads: int | None = None) -> np.ndarray:
        """The tensor as float32 in its NumPy shape (``comfy.gguf.orig_shape.<name>`` applied)."""
        t = self._tensor(name)
        [flat] = _core.gguf_decode_arrays([self.raw(name)], [t.type.id], [t.numel], [f"{self.path}: tensor {name!r}"],
                                          num_threads or 0)
        return flat.reshape(self.original_shape(name))

    def original_shape(self, name: str) -> tuple[int, ...]:
        """The shape before writing: ComfyUI-GGUF's ``comfy.gguf.orig_shape.<name>`` if present."""
        return original_shape(self._tensor(name), self.metadata, self.path)


def original_shape(t: GgufTensor, metadata: dict[str, Any], where: Any) -> tuple[int, ...]:
    """``t``'s shape before writing: ``comfy.gguf.orig_shape.<name>`` in ``metadata`` if there,
    checked against the tensor's element count."""
    stored = metadata.get(f"comfy.gguf.orig_shape.{t.name}")
    if stored is None:
        return t.shape
    if not isinstance(stored, list) or not 1 <= len(stored) <= MAX_ORIG_DIMS \
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in stored) \
            or math.prod(stored) != t.numel:
        raise FileFormatError(f"{where}: comfy.gguf.orig_shape.{t.name} = {stored!r} does not fit the tensor's "
                              f"{t.numel} elements")
    return tuple(stored)
