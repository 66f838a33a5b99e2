"""The quantized model file: ``.aq``, an Arrow IPC file with one record batch per tensor.

Columns are those of ``quantize_arrow``'s output (docs/format.md) with ``quantized_data`` always
``large_binary``, plus ``source_dtype`` (the safetensors dtype name). Version 2 files (written
when any tensor uses the kquant scheme) add ``scheme`` and ``rotation``; version 1 files still read. Tensors that were not
quantized are stored too, as their raw little-endian bytes with ``group_size`` 0, ``bit_width``
the bits of their dtype and no scales, so the file holds the whole model.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from .errors import DataError, FileFormatError, MissingFileError
from .paths import atomic_file, check_output_apart
from .safetensors_io import write_safetensors
from .tensor import (QUANTIZABLE_DTYPES, SAFETENSORS_DTYPES, QuantizedTensor, check_quantized, check_shape,
                     dequantize_tensors, to_dtype)

# Floating safetensors dtypes that `to_safetensors(dtype=...)` converts (F8 stays raw bytes).
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")

AQ_FORMAT = "arrowquant.aq"
AQ_FORMAT_VERSION = "1"
AQ_FORMAT_VERSION_2 = "2"

AQ_SCHEMA = pa.schema([
    pa.field("layer_name", pa.string(), False),
    pa.field("quantized_data", pa.large_binary(), False),
    pa.field("scales", pa.list_(pa.float32()), False),
    pa.field("zero_points", pa.list_(pa.float32()), False),
    pa.field("shape", pa.list_(pa.int64()), False),
    pa.field("bit_width", pa.uint8(), False),
    pa.field("group_size", pa.int32(), False),
    pa.field("symmetric", pa.bool_(), False),
    pa.field("source_dtype", pa.string(), False),
])
AQ_SCHEMA_V2 = AQ_SCHEMA.append(pa.field("scheme", pa.string(), False)).append(pa.field("rotation", pa.string(), False))


def _float_list(values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array([0, values.size], pa.int32()), pa.array(values, pa.float32()))


def _row(name: str, data: Any, scales: np.ndarray, zero_points: np.ndarray, shape, bit_width: int,
         group_size: int, symmetric: bool, source_dtype: str, scheme: str | None = None,
         rotation: str = "none") -> pa.RecordBatch:
    """One tensor's record batch; ``scheme`` None writes the version-1 schema."""
    buffer = pa.py_buffer(data)  # zero-copy over the kernel output or the source mapping
    data_array = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 1, [None, pa.array([0, buffer.size], pa.int64()).buffers()[1], buffer])
    columns = [
        pa.array([name], pa.string()), data_array, _float_list(scales), _float_list(zero_points),
        pa.array([list(shape)], pa.list_(pa.int64())), pa.array([bit_width], pa.uint8()),
        pa.array([group_size], pa.int32()), pa.array([symmetric], pa.bool_()), pa.array([source_dtype], pa.string()),
    ]
    if scheme is None:
        return pa.RecordBatch.from_arrays(columns, schema=AQ_SCHEMA)
    columns += [pa.array([scheme], pa.string()), pa.array([rotation], pa.string())]
    return pa.RecordBatch.from_arrays(columns, schema=AQ_SCHEMA_V2)


class AqWriter:
    """Streams tensors into a .aq file; the file appears (atomically) only on a clean close.

    ``format_version`` 2 adds the scheme and rotation columns (needed for kquant tensors); 1 (the
    default) writes files that every arrowquant reads."""

    def __init__(self, path: Any, metadata: dict[str, Any], *, overwrite: bool = False, format_version: int = 1) -> None:
        if format_version not in (1, 2):
            raise ValueError(f"format_version must be 1 or 2; got {format_version!r}")
        self.path = Path(path)
        self._v2 = format_version == 2
        self._atomic = atomic_file(self.path, overwrite)
        self._tmp = self._atomic.__enter__()
        encoded = {"arrowquant.format": AQ_FORMAT,
                   "arrowquant.format_version": AQ_FORMAT_VERSION_2 if self._v2 else AQ_FORMAT_VERSION}
        encoded.update({f"arrowquant.{k}": json.dumps(v) for k, v in metadata.items()})
        try:
            self._sink = pa.OSFile(str(self._tmp), "wb")
            self._writer = pa.ipc.new_file(self._sink, (AQ_SCHEMA_V2 if self._v2 else AQ_SCHEMA).with_metadata(encoded))
        except BaseException as e:
            self._atomic.__exit__(type(e), e, None)
            raise

    def write_quantized(self, name: str, tensor: QuantizedTensor) -> None:
        if tensor.scheme != "affine" and not self._v2:
            raise ValueError(f"layer {name!r}: a {tensor.scheme} tensor needs a format_version=2 writer")
        self._writer.write_batch(_row(name, tensor.quantized_data, tensor.scales, tensor.zero_points, tensor.shape,
                                      tensor.bit_width, tensor.group_size, tensor.symmetric, tensor.source_dtype,
                                      tensor.scheme if self._v2 else None, tensor.rotation))

    def write_raw(self, name: str, data: Any, dtype: str, shape) -> None:
        empty = np.zeros(0, np.float32)
        self._writer.write_batch(_row(name, data, empty, empty, shape, 8 * SAFETENSORS_DTYPES[dtype].itemsize, 0,
                                      False, dtype, "raw" if self._v2 else None))

    def close(self) -> None:
        self._writer.close()
        self._sink.close()
        self._atomic.__exit__(None, None, None)

    def abort(self, exc: BaseException | None = None) -> None:
        try:
            self._writer.close()
            self._sink.close()
        finally:
            self._atomic.__exit__(type(exc) if exc else Exception, exc, None)

    def __enter__(self) -> "AqWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc)


class AqFile:
    """A memory-mapped .aq file (``arrowquant.open``). Tensors come back without copying."""

    def __init__(self, path: Any) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"{self.path}: no such .aq file")
        try:
            self._source = pa.memory_map(str(self.path), "r")
            self._mapped_size = os.fstat(self._source.fileno()).st_size
            self._reader = pa.ipc.open_file(self._source)
        except (pa.ArrowException, OSError) as e:  # any pyarrow error: a damaged file can provoke all kinds
            raise FileFormatError(f"{self.path}: not a readable Arrow IPC (.aq) file ({e})") from None
        raw = self._reader.schema.metadata or {}
        if raw.get(b"arrowquant.format") != AQ_FORMAT.encode():
            raise FileFormatError(f"{self.path}: not an arrowquant .aq file (schema metadata arrowquant.format is "
                                  f"{raw.get(b'arrowquant.format')!r})")
        version = raw.get(b"arrowquant.format_version")
        if version not in (AQ_FORMAT_VERSION.encode(), AQ_FORMAT_VERSION_2.encode()):
            raise FileFormatError(f"{self.path}: .aq format version {version!r} is not supported (this arrowquant "
                                  f"reads versions {AQ_FORMAT_VERSION} and {AQ_FORMAT_VERSION_2})")
        self.format_version = int(version)
        expected_schema = AQ_SCHEMA_V2 if self.format_version == 2 else AQ_SCHEMA
        try:
            names = self._reader.schema.names
        except UnicodeDecodeError:  # a damaged schema: field names that are not UTF-8
            raise FileFormatError(f"{self.path}: the schema's column names are not valid UTF-8 (damaged file)") from None
        missing = [f.name for f in expected_schema if f.name not in names]
        if missing:
            raise FileFormatError(f"{self.path}: columns {missing} are missing")
        for field in expected_schema:  # the right names with other types would fail later, anywhere
            found = self._reader.schema.field(field.name).type
            if found != field.type:
                raise FileFormatError(f"{self.path}: column {field.name!r} has type {found}; expected {field.type}")
        self.metadata: dict[str, Any] = {}
        for key, value in raw.items():
            k = key.decode("utf-8", "replace").removeprefix("arrowquant.")
            try:
                self.metadata[k] = json.loads(value) if k not in ("format", "format_version") else value.decode()
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise FileFormatError(f"{self.path}: metadata {key!r} is not valid JSON (or nested too deeply)") from None
        self._index: dict[str, tuple[int, int]] = {}
        self._batches: list[pa.RecordBatch] = []
        for b in range(self._reader.num_record_batches):
            try:
                batch = self._reader.get_batch(b)
                # Every offset and length checked once, here: Arrow trusts a file's buffers, and
                # reading a corrupt one (a flipped bit, a truncated write) could crash the process.
                batch.validate(full=True)
            except (pa.ArrowException, OSError) as e:
                raise FileFormatError(f"{self.path}: record batch {b} is corrupt ({e})") from None
            self._batches.append(batch)
            for row, name in enumerate(batch.column("layer_name").to_pylist()):
                if name is None or name in self._index:
                    raise FileFormatError(f"{self.path}: layer name {name!r} is null or repeated")
                self._index[name] = (b, row)

    def __enter__(self) -> "AqFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._source.close()

    @property
    def layer_names(self) -> list[str]:
        return list(self._index)

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def __len__(self) -> int:
        return len(self._index)

    def _fields(self, name: str) -> dict[str, Any]:
        if name not in self._index:
            raise KeyError(f"{self.path}: no layer named {name!r}")
        b, row = self._index[name]
        label = f"{self.path}: layer {name!r}"
        # A file truncated while mapped turns a read of its lost pages into SIGBUS: re-checked per layer.
        size = os.fstat(self._source.fileno()).st_size
        if size < self._mapped_size:
            raise FileFormatError(f"{label}: the file shrank from {self._mapped_size} to {size} bytes while open")
        batch = self._batches[b]
        get = lambda c: batch.column(c)[row]  # noqa: E731
        fields = {c: get(c).as_py() for c in ("shape", "bit_width", "group_size", "symmetric", "source_dtype")}
        fields["scheme"], fields["rotation"] = ((get("scheme").as_py(), get("rotation").as_py())
                                                if self.format_version == 2 else
                                                ("affine" if fields["group_size"] != 0 else "raw", "none"))
        for key in ("bit_width", "group_size", "symmetric", "source_dtype"):
            if fields[key] is None:
                raise FileFormatError(f"{label}: {key} is null")
        quantized = fields["group_size"] != 0
        if (fields["scheme"] not in ("affine", "kquant", "raw") or (fields["scheme"] == "raw") == quantized or
                fields["rotation"] not in ("none", "hadamard256")):
            raise FileFormatError(f"{label}: scheme {fields['scheme']!r} / rotation {fields['rotation']!r} with group_size "
                                  f"{fields['group_size']} is not valid (expected 'affine' or 'kquant' for quantized "
                                  "tensors, 'raw' for stored ones; rotation 'none' or 'hadamard256')")
        if fields["shape"] is None or any(d is None or d < 0 for d in fields["shape"]):
            raise FileFormatError(f"{label}: invalid shape {fields['shape']!r}")
        if fields["source_dtype"] not in SAFETENSORS_DTYPES:
            raise FileFormatError(f"{label}: unknown source_dtype {fields['source_dtype']!r}")
        try:
            check_shape(fields["shape"], label, SAFETENSORS_DTYPES[fields["source_dtype"]].itemsize)
        except DataError as e:
            raise FileFormatError(str(e)) from None
        data = get("quantized_data")
        fields["data"] = np.frombuffer(data.as_buffer(), np.uint8) if data.is_valid else None
        fields["scales"] = get("scales").values.to_numpy(zero_copy_only=False) if get("scales").is_valid else None
        fields["zero_points"] = (get("zero_points").values.to_numpy(zero_copy_only=False)
                                 if get("zero_points").is_valid else None)
        if fields["data"] is None or fields["scales"] is None or fields["zero_points"] is None:
            raise FileFormatError(f"{label}: quantized_data, scales and zero_points must not be null")
        # The mapping is read-only but NumPy would call these views writeable: a write would crash.
        for key in ("data", "scales", "zero_points"):
            fields[key].flags.writeable = False
        return fields

    def is_quantized(self, name: str) -> bool:
        return self._fields(name)["group_size"] != 0

    def tensor(self, name: str) -> QuantizedTensor | np.ndarray:
        """The QuantizedTensor of a quantized layer, or the array of a carried-through one (zero-copy)."""
        f = self._fields(name)
        if f["group_size"] == 0:
            dtype = SAFETENSORS_DTYPES[f["source_dtype"]]
            expected = math.prod(f["shape"]) * dtype.itemsize
            if f["data"].nbytes != expected:
                raise FileFormatError(f"{self.path}: layer {name!r} holds {f['data'].nbytes} bytes but shape "
                                      f"{f['shape']} of {f['source_dtype']} needs {expected}")
            return f["data"].view(dtype).reshape(f["shape"])
        if f["source_dtype"] not in QUANTIZABLE_DTYPES:
            raise FileFormatError(f"{self.path}: layer {name!r} is quantized but its source_dtype is {f['source_dtype']}")
        try:
            return check_quantized(QuantizedTensor(f["data"], f["scales"], f["zero_points"], f["shape"], f["bit_width"],
                                                   f["group_size"], f["symmetric"], f["source_dtype"], f["scheme"],
                                                   f["rotation"]), f"{self.path}: layer {name!r}")
        except DataError as e:  # a damaged file, named as such
            raise FileFormatError(str(e)) from None

    __getitem__ = tensor

    def dequantize(self, name: str, dtype: Any = np.float32) -> np.ndarray:
        """A layer decoded to ``dtype`` (default float32); carried-through layers come back as stored."""
        t = self.tensor(name)
        if isinstance(t, np.ndarray):
            return t
        return to_dtype(dequantize_tensors([t], [f"{self.path}: layer {name!r}"])[0], dtype).reshape(t.shape)

    def layers(self) -> list[dict[str, Any]]:
        """Per-layer summary: name, shape, bits, source dtype, stored bytes, whether quantized."""
        out = []
        for name in self._index:
            f = self._fields(name)
            out.append({"name": name, "shape": f["shape"], "bit_width": f["bit_width"], "group_size": f["group_size"],
                        "source_dtype": f["source_dtype"], "quantized": f["group_size"] != 0, "scheme": f["scheme"],
                        "rotation": f["rotation"],
                        "bytes": f["data"].nbytes + 4 * (f["scales"].size + f["zero_points"].size)})
        return out

    def to_safetensors(self, out_path: Any, dtype: Any = None, *, overwrite: bool = False,
                       progress_callback: Callable[[str, float], Any] | None = None) -> None:
        """Write a safetensors checkpoint: quantized layers dequantized to their source dtype (or to
        ``dtype`` if given), carried-through layers byte for byte, except that with ``dtype`` every
        floating layer, carried ones included, is converted to it. Streams one layer at a time; an
        existing file is replaced only with ``overwrite``. ``progress_callback(name, fraction)``
        runs after each layer (fraction of the stored bytes done)."""
        if dtype is not None:
            to_dtype(np.zeros(1, np.float32), dtype)  # validate before writing anything
        specs, names = [], self.layer_names
        for name in names:
            f = self._fields(name)
            stored = f["source_dtype"]
            converted = dtype is not None and (f["group_size"] != 0 or stored in FLOAT_DTYPES)
            target = _safetensors_name(dtype) if converted else stored
            specs.append((name, target, tuple(f["shape"]), math.prod(f["shape"]) * SAFETENSORS_DTYPES[target].itemsize))

        sizes = [self._fields(name)["data"].nbytes for name in names]
        total = sum(sizes) or 1

        def chunks() -> Iterator[Any]:
            done = 0
            for name, (_, target, _, _), size in zip(names, specs, sizes):
                t = self.tensor(name)
                if isinstance(t, np.ndarray):
                    yield t if t.dtype == SAFETENSORS_DTYPES[target] else t.astype(SAFETENSORS_DTYPES[target])
                else:
                    yield np.ascontiguousarray(self.dequantize(name, target))
                done += size
                if progress_callback is not None:
                    progress_callback(name, done / total)

        source_meta = self.metadata.get("source_metadata") or {}
        merged = {k: v for meta in source_meta.values() for k, v in (meta or {}).items()}
        out_path = Path(out_path)
        check_output_apart(out_path, [self.path])
        write_safetensors(out_path, specs, chunks(), merged or None, overwrite=overwrite)


def _safetensors_name(dtype: Any) -> str:
    if str(dtype) in ("bfloat16", "BF16"):
        return "BF16"
    if isinstance(dtype, str) and dtype in SAFETENSORS_DTYPES:
        return dtype
    return {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}[np.dtype(dtype)]


def open_aq(path: Any) -> AqFile:
    return AqFile(path)
