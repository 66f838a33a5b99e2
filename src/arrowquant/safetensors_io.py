"""Reading and writing safetensors checkpoints.

Why our own reader rather than the ``safetensors`` package: its NumPy API copies every tensor
and cannot represent BF16 (NumPy has no bfloat16), while quantizing wants zero-copy views of the
memory-mapped file for every float dtype, and pages released as soon as a tensor is done (so
peak memory is one tensor, not the model). The ``safetensors`` package is the independent
reader in our tests.

Why our own writer: the package's writers need every tensor in memory at once; ours streams
one tensor at a time into a temporary file that is renamed into place only when complete.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import struct
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import DataError, FileFormatError, MissingFileError, ParameterError
from .paths import atomic_file, open_input, path_inside
from .sources import missing
from .tensor import SAFETENSORS_DTYPES, check_shape, check_text

# The reference implementation refuses headers above 100 MB; so do we (a corrupt length would
# otherwise make us read and parse an arbitrary amount of the file as JSON).
MAX_HEADER_BYTES = 100 * 1024 * 1024
_PAGE = mmap.PAGESIZE
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux value; older Pythons lack the name


class TensorInfo:
    __slots__ = ("name", "dtype", "shape", "begin", "end")

    def __init__(self, name: str, dtype: str, shape: tuple[int, ...], begin: int, end: int) -> None:
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_header(header: bytes, data_size: int, where: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Validate a safetensors JSON header against the size of the data area that follows it."""
    try:
        doc = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise FileFormatError(f"{where}: the header is not valid UTF-8 JSON ({reason})") from None
    if not isinstance(doc, dict):
        raise FileFormatError(f"{where}: the header must be a JSON object; found {type(doc).__name__}")
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise FileFormatError(f"{where}: __metadata__ must map strings to strings")
    tensors: dict[str, TensorInfo] = {}
    for name, entry in doc.items():
        at = f"{where}: tensor {name!r}"
        try:
            check_text(name, f"{where}: tensor name")
        except DataError as e:
            raise FileFormatError(str(e)) from None
        if not isinstance(entry, dict):
            raise FileFormatError(f"{at}: entry must be an object; found {type(entry).__name__}")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPES:
            raise FileFormatError(f"{at}: unknown dtype {dtype!r}; expected one of {', '.join(SAFETENSORS_DTYPES)}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise FileFormatError(f"{at}: shape must be a list of non-negative integers; found {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise FileFormatError(f"{at}: data_offsets must be [begin, end] with 0 <= begin <= end; found {offsets!r}")
        begin, end = offsets
        try:  # the same limit the .aq reader applies, so we never write a file we would refuse
            check_shape(shape, at, SAFETENSORS_DTYPES[dtype].itemsize)
        except DataError as e:
            raise FileFormatError(str(e)) from None
        expected = math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize
        if end - begin != expected:
            raise FileFormatError(f"{at}: shape {shape} of {dtype} needs {expected} bytes but data_offsets "
                                  f"[{begin}, {end}] cover {end - begin}")
        if end > data_size:
            raise FileFormatError(f"{at}: data_offsets end {end} lies beyond the data area of {data_size} bytes "
                                  "(truncated file?)")
        tensors[name] = TensorInfo(name, dtype, tuple(shape), begin, end)
    # As the format requires, the tensors tile the data area exactly: no overlap (two names for
    # the same bytes) and no hole (bytes that belong to no tensor, e.g. a polyglot payload).
    position, previous = 0, None
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin < position:
            raise FileFormatError(f"{where}: tensors {previous.name!r} and {info.name!r} overlap "
                                  f"([{previous.begin}, {previous.end}) and [{info.begin}, {info.end}))")
        if info.begin > position:
            raise FileFormatError(f"{where}: bytes [{position}, {info.begin}) of the data area belong to no tensor "
                                  f"(a hole before {info.name!r})")
        position, previous = info.end, info
    if position != data_size:
        raise FileFormatError(f"{where}: the data area has {data_size - position} bytes after the last tensor "
                              "that belong to no tensor")
    return tensors, metadata


class SafetensorsFile:
    """A memory-mapped safetensors file whose header was validated before any data is touched."""

    def __init__(self, path: Any) -> None:
        self.path = Path(path)
        self._file = open_input(self.path, "a safetensors file")
        try:
            self._map = None
            size = os.fstat(self._file.fileno()).st_size
            if size < 8:
                raise FileFormatError(f"{self.path}: {size} bytes is too short for a safetensors file (8-byte header length)")
            (header_len,) = struct.unpack("<Q", self._file.read(8))
            if header_len > min(size - 8, MAX_HEADER_BYTES):
                raise FileFormatError(f"{self.path}: header length {header_len} exceeds the file's {size - 8} remaining "
                                      f"bytes (or the {MAX_HEADER_BYTES}-byte limit): truncated or not safetensors")
            header = self._file.read(header_len)
            self.data_start = 8 + header_len
            self.tensors, self.metadata = parse_header(header, size - self.data_start, str(self.path))
            self.size = size
            if size > self.data_start:
                self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # arrays still view it; the mapping goes when they do
        self._file.close()

    def names(self) -> list[str]:
        """Tensor names in the order their data appears in the file."""
        return [t.name for t in sorted(self.tensors.values(), key=lambda t: t.begin)]

    def _check_not_truncated(self, info: TensorInfo) -> None:
        """Reading a mapped page past the end of a file that another process truncated kills the
        process with SIGBUS; look at the size first (a truncation after this check remains a race,
        docs/reliability.md)."""
        size = os.fstat(self._file.fileno()).st_size
        if size < self.data_start + info.end:
            raise FileFormatError(f"{self.path}: tensor {info.name!r}: the file shrank to {size} bytes while being read "
                                  f"(was {self.size}); another process truncated or rewrote it")

    def array(self, name: str) -> np.ndarray:
        """A read-only, zero-copy view of a tensor (BF16 as ml_dtypes.bfloat16, F8 as uint8)."""
        info = self.tensors[name]
        self._check_not_truncated(info)
        dtype = SAFETENSORS_DTYPES[info.dtype]
        if info.nbytes == 0:
            return np.zeros(info.shape, dtype)
        view = np.frombuffer(self._map, dtype=dtype, count=info.numel, offset=self.data_start + info.begin)
        return view.reshape(info.shape)

    def raw_bytes(self, name: str) -> memoryview:
        info = self.tensors[name]
        if info.nbytes == 0:
            return memoryview(b"")
        self._check_not_truncated(info)
        start = self.data_start + info.begin
        return memoryview(self._map)[start:start + info.nbytes]

    def prefetch(self, name: str) -> None:
        """Map a tensor's pages in one system call (MADV_POPULATE_READ, Linux >= 5.14) instead of
        one page fault per 4 KB while the kernels read it; silently skipped where unsupported."""
        info = self.tensors[name]
        if self._map is None or info.nbytes == 0 or not hasattr(self._map, "madvise"):
            return
        start = (self.data_start + info.begin) // _PAGE * _PAGE
        try:
            self._map.madvise(_MADV_POPULATE_READ, start, self.data_start + info.end - start)
        except OSError:
            pass

    def release(self, name: str) -> None:
        """Drop a tensor's pages from this process's resident memory (they stay in the page cache)."""
        info = self.tensors[name]
        if self._map is None or info.nbytes == 0 or not hasattr(self._map, "madvise"):
            return
        start = (self.data_start + info.begin) // _PAGE * _PAGE
        end = self.data_start + info.end
        self._map.madvise(mmap.MADV_DONTNEED, start, end - start)


_SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")
_INDEX_NAME = re.compile(r"(.+)\.safetensors\.index(?:\.([^.]+))?\.json")


def weight_variant(name: str) -> str | None:
    """The diffusers variant a weight file belongs to: ``model.fp16.safetensors``,
    ``model.fp16-00001-of-00002.safetensors`` and ``model.safetensors.index.fp16.json`` are
    "fp16"; ``model.safetensors`` and its shards and index have none."""
    m = _INDEX_NAME.fullmatch(name)
    if m:
        return m.group(2)
    stem = _SHARD_SUFFIX.sub("", name.removesuffix(".safetensors"))
    return stem.rsplit(".", 1)[1] if "." in stem else None


def is_weight_file(name: str) -> bool:
    return name.endswith(".safetensors") or _INDEX_NAME.fullmatch(name) is not None


class Checkpoint:
    """The files of one checkpoint: ``files`` (safetensors shards, in order), and for a sharded
    checkpoint its ``index`` path and ``weight_map`` (tensor name -> shard path)."""

    def __init__(self, files: list[Path], index: Path | None = None,
                 weight_map: dict[str, Path] | None = None) -> None:
        self.files, self.index, self.weight_map = files, index, weight_map

    @property
    def inputs(self) -> list[Path]:
        """Every path the checkpoint reads: an output may be none of them."""
        return self.files + ([self.index] if self.index else [])

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    def open(self) -> list[SafetensorsFile]:
        """Open every shard, validating each header, and the checkpoint as a whole, before a
        byte is written: no tensor in two shards, and every tensor an index names in its shard."""
        opened: list[SafetensorsFile] = []
        try:
            owner: dict[str, SafetensorsFile] = {}
            for f in self.files:
                sf = SafetensorsFile(f)
                opened.append(sf)
                for name in sf.tensors:
                    if name in owner:
                        raise FileFormatError(f"{sf.path}: tensor {name!r} is also in {owner[name].path}; a checkpoint "
                                              "defines each tensor once (two variants of the weights in one folder? "
                                              "pass variant= (--variant))")
                    owner[name] = sf
            for name, shard in (self.weight_map or {}).items():
                if name not in owner:
                    raise FileFormatError(f"{self.index}: names tensor {name!r} in {shard.name}, but no shard holds it")
                if owner[name].path != shard:
                    raise FileFormatError(f"{self.index}: names tensor {name!r} in {shard.name}, but it is in "
                                          f"{owner[name].path.name}")
            return opened
        except BaseException:
            for sf in opened:
                sf.close()
            raise

    def tensor_names(self) -> list[str]:
        names = []
        for sf in self.open():
            with sf:
                names += sf.names()
        return names


def load_json(path: Path, what: str) -> Any:
    """A JSON document from a file, every failure (deep nesting included) a FileFormatError."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise FileFormatError(f"{path}: not a valid {what} (not UTF-8 JSON: {reason})") from None


def _read_index(path: Path) -> Checkpoint:
    index = load_json(path, "safetensors index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in weight_map.items()):
        raise FileFormatError(f"{path}: not a safetensors index (expected JSON with a 'weight_map' of "
                              "tensor name -> file name)")
    shards: dict[str, Path] = {}
    for shard in dict.fromkeys(weight_map.values()):
        shard_path = path_inside(path.parent, shard, f"{path}: shard")
        if not shard_path.is_file():
            raise MissingFileError(f"{path}: shard {shard!r} does not exist next to the index")
        shards[shard] = shard_path
    for name in weight_map:
        check_text(name, f"{path}: tensor name")
    return Checkpoint(list(shards.values()), path, {k: shards[v] for k, v in weight_map.items()})


def resolve_checkpoint(path: Any, variant: str | None = None) -> Checkpoint:
    """The checkpoint at ``path``: a safetensors file, a ``*.safetensors.index.json``, or a folder
    holding an index or ``*.safetensors`` files. In a folder, as diffusers does, the files without
    a variant are taken (``model.safetensors``, not ``model.fp16.safetensors``) unless ``variant``
    names one; a folder holding only one variant takes it. Files found in a folder, and shards
    named by an index, must stay inside that folder (symlinks included)."""
    path = Path(path)
    if variant is not None and (not isinstance(variant, str) or not re.fullmatch(r"[A-Za-z0-9_]+", variant)):
        raise ParameterError(f"variant must be a name such as 'fp16'; got {variant!r}")
    if not path.exists():
        raise missing(path)
    if not path.is_dir():
        if _INDEX_NAME.fullmatch(path.name) or path.name.endswith(".json"):
            return _read_index(path)
        return Checkpoint([path])
    candidates = sorted(p.name for p in path.iterdir() if is_weight_file(p.name))
    variants = sorted({v for v in map(weight_variant, candidates) if v is not None})
    if variant is None:
        chosen = [n for n in candidates if weight_variant(n) is None]
        if not chosen and len(variants) == 1:
            chosen = [n for n in candidates if weight_variant(n) == variants[0]]
        elif not chosen and variants:
            raise MissingFileError(f"{path}: holds only variants {', '.join(variants)} of the weights; pass one "
                                   "with variant= (--variant)")
    else:
        chosen = [n for n in candidates if weight_variant(n) == variant]
        if not chosen:
            found = ", ".join(variants + (["(none)"] if any(weight_variant(n) is None for n in candidates) else []))
            raise MissingFileError(f"{path}: holds no weights of variant {variant!r} (variants found: {found or 'none'})")
    indexes = [n for n in chosen if n.endswith(".json")]
    if len(indexes) > 1:
        raise FileFormatError(f"{path}: holds several index files ({', '.join(indexes)}); pass the one to use")
    if indexes:
        return _read_index(path_inside(path, indexes[0], f"{path}: index"))
    files = [path_inside(path, n, f"{path}: weight file") for n in chosen]
    files = [f for f in files if f.is_file()]
    if not files:
        raise MissingFileError(f"{path}: folder holds no .safetensors files and no *.safetensors.index.json")
    return Checkpoint(files)


def _header_bytes(specs: list[tuple[str, str, tuple[int, ...], int]], metadata: dict[str, str] | None) -> bytes:
    doc: dict[str, Any] = {}
    if metadata:
        doc["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dtype, shape, nbytes in specs:
        doc[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    return header + b" " * (-len(header) % 8)  # pad so the data area starts 8-byte aligned


def write_safetensors(path: Any, specs: list[tuple[str, str, tuple[int, ...], int]],
                      chunks: Iterable[Any], metadata: dict[str, str] | None = None, *, overwrite: bool = False) -> None:
    """Stream a safetensors file: ``specs`` lists (name, dtype, shape, nbytes) in order and
    ``chunks`` yields each tensor's bytes in the same order. Atomic: a temporary file in the
    destination folder is published only after the last byte is written, over an existing file
    only with ``overwrite``."""
    path = Path(path)
    for name, *_ in specs:  # checked before anything is created
        if name == "__metadata__":
            raise FileFormatError(f"{path}: a tensor named '__metadata__' cannot be written: safetensors reserves that "
                                  "header key for the file's metadata (the tensor would be lost and readers would "
                                  "refuse the file); rename the tensor in the source")
    with atomic_file(path, overwrite) as tmp:
        with open(tmp, "wb") as f:
            header = _header_bytes(specs, metadata)
            f.write(struct.pack("<Q", len(header)))
            f.write(header)
            iterator: Iterator[Any] = iter(chunks)
            for name, _, _, nbytes in specs:
                chunk = next(iterator)
                if isinstance(chunk, np.ndarray):  # as bytes: bfloat16 has no buffer-protocol format
                    chunk = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)
                data = memoryview(chunk).cast("B")
                if data.nbytes != nbytes:
                    raise FileFormatError(f"{path}: tensor {name!r} produced {data.nbytes} bytes, expected {nbytes}")
                f.write(data)
