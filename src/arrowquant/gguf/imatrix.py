"""Importance matrices (llama-imatrix's output) for ggml's importance-weighted quantizers, read as
llama-quantize reads them: the GGUF form (``<tensor>.in_sum2`` and ``<tensor>.counts`` F32 tensors,
each matrix's sums divided by its count, 1 where a count is 0) and the legacy ``.dat`` form
(entries of name, call count and values, the values divided by the call count). The result maps a
tensor's GGUF name to one weight per column of its rows (per expert matrix, concatenated), with the
datasets and chunk count it was computed on, which llama-quantize records in the quantized file.

Every count and length read from the file is bounded by the bytes left before anything is
allocated; errors name the file and entry.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import FileFormatError, MissingFileError, ParameterError
from ..paths import open_input
from .container import UINT32, GgufFile, Value
from .metadata_edits import MetadataEdits, truncated

MAX_NAME_BYTES = 1 << 16


class Imatrix(NamedTuple):
    """An importance matrix as llama-quantize uses it."""
    path: str
    entries: dict[str, np.ndarray]  # {tensor name: float32 importance per column}
    datasets: list[str]  # the text files it was computed on, where the file says
    chunk_count: int  # 0 where the file does not say

    def selected(self, include: Any = None, exclude: Any = None) -> "Imatrix":
        """Only the entries whose names contain one of ``include`` / none of ``exclude`` (plain
        substrings, llama-quantize's --include-weights / --exclude-weights; not both)."""
        include, exclude = _names(include, "include_weights"), _names(exclude, "exclude_weights")
        if include and exclude:
            raise ParameterError("include_weights= (--include-weights) and exclude_weights= (--exclude-weights) "
                                 "cannot be used together (as in llama-quantize)")
        entries = {name: values for name, values in self.entries.items()
                   if not any(part in name for part in exclude) and (not include or any(p in name for p in include))}
        return self._replace(entries=entries)

    def metadata_edits(self) -> MetadataEdits:
        """The keys llama-quantize adds to a file quantized with this matrix (none if no entry is
        left): the file as given, the first dataset, the entry and chunk counts."""
        if not self.entries:
            return []
        edits = [("quantize.imatrix.file", truncated(self.path))]
        if self.datasets:
            edits.append(("quantize.imatrix.dataset", truncated(self.datasets[0])))
        edits.append(("quantize.imatrix.entries_count", Value(UINT32, len(self.entries))))
        if self.chunk_count > 0:
            edits.append(("quantize.imatrix.chunks_count", Value(UINT32, self.chunk_count)))
        return edits


def _names(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v for v in values):
        raise ParameterError(f"{what} must be a tensor name (part) or a list of them; got {value!r}")
    return list(values)


def read_imatrix(path: Any) -> Imatrix:
    """An imatrix file (GGUF or legacy .dat), every value checked finite."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such importance matrix file")
    with open(path, "rb") as f:
        magic = f.read(4)
    entries, datasets, chunks = _read_gguf(path) if magic == b"GGUF" else _read_legacy(path)
    for name, values in entries.items():
        if not np.all(np.isfinite(values)):
            raise FileFormatError(f"{path}: importance entry {name!r} holds NaN or Inf")
    if not entries:
        raise FileFormatError(f"{path}: holds no importance entries")
    return Imatrix(str(path), entries, datasets, chunks)


def _read_gguf(path: Path) -> tuple[dict[str, np.ndarray], list[str], int]:
    with GgufFile(path) as f:
        sums, counts = {}, {}
        for name, t in f.tensors.items():
            for suffix, into in ((".in_sum2", sums), (".counts", counts)):
                if name.endswith(suffix):
                    if t.type.name != "F32":
                        raise FileFormatError(f"{path}: {name!r} is {t.type.name}; imatrix sums and counts are F32")
                    into[name[:-len(suffix)]] = np.array(f.raw(name).view(np.float32))
        if not sums and not counts:
            raise FileFormatError(f"{path}: a GGUF file without .in_sum2 / .counts tensors, not an importance matrix")
        out = {}
        for name in sorted(set(sums) | set(counts)):
            if name not in sums or name not in counts:
                raise FileFormatError(f"{path}: importance entry {name!r} has sums without counts or counts without sums")
            s, c = sums[name], np.rint(counts[name])
            if c.size == 0 or s.size % c.size:
                raise FileFormatError(f"{path}: importance entry {name!r}: {s.size} sums for {c.size} counts")
            per = s.reshape(c.size, -1)
            values = np.where(c[:, None] > 0, per / np.where(c > 0, c, 1)[:, None].astype(np.float32), np.float32(1))
            out[name] = values.astype(np.float32).reshape(-1)
        datasets = f.metadata.get("imatrix.datasets", [])
        chunks = f.metadata.get("imatrix.chunk_count", 0)
        if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
            raise FileFormatError(f"{path}: imatrix.datasets is {type(datasets).__name__}; expected a list of strings")
        if isinstance(chunks, bool) or not isinstance(chunks, int) or not 0 <= chunks < 2**32:
            raise FileFormatError(f"{path}: imatrix.chunk_count is {chunks!r}; expected a u32")
        return out, datasets, chunks


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
    """int32 entry count; per entry: int32 name length, name, int32 call count, int32 value count,
    float32 values; then (optional) int32 chunk count and dataset name."""
    f = open_input(path, "an importance matrix file")
    with f:
        size = os.fstat(f.fileno()).st_size

        def take(n: int, what: str) -> bytes:
            data = f.read(n)
            if len(data) != n:
                raise FileFormatError(f"{path}: truncated in {what} (an imatrix .dat file, or a damaged one)")
            return data

        (n_entries,) = struct.unpack("<i", take(4, "the entry count"))
        if not 0 < n_entries <= size // 16:  # every entry takes at least 16 bytes
            raise FileFormatError(f"{path}: claims {n_entries} importance entries in {size} bytes; not an imatrix file")
        out: dict[str, np.ndarray] = {}
        for i in range(n_entries):
            (length,) = struct.unpack("<i", take(4, f"entry {i}'s name length"))
            if not 0 < length <= min(MAX_NAME_BYTES, size - f.tell()):
                raise FileFormatError(f"{path}: entry {i} has a name of {length} bytes")
            try:
                name = take(length, f"entry {i}'s name").decode("utf-8")
            except UnicodeDecodeError:
                raise FileFormatError(f"{path}: entry {i}'s name is not UTF-8") from None
            ncall, nval = struct.unpack("<ii", take(8, f"entry {name!r}'s counts"))
            if ncall < 0 or not 0 < nval <= (size - f.tell()) // 4:
                raise FileFormatError(f"{path}: entry {name!r} claims {nval} values and {ncall} calls; the file "
                                      f"has {size - f.tell()} bytes left")
            values = np.frombuffer(take(4 * nval, f"entry {name!r}'s values"), "<f4").astype(np.float32)
            if name in out:
                raise FileFormatError(f"{path}: entry {name!r} appears twice")
            out[name] = values / np.float32(ncall) if ncall > 0 else values
        chunks, datasets = 0, []
        left = size - f.tell()
        if left >= 4:  # optional: the chunk count, then the dataset's name
            (chunks,) = struct.unpack("<i", take(4, "the chunk count"))
            if left >= 8:
                (length,) = struct.unpack("<i", take(4, "the dataset name's length"))
                if 0 < length <= size - f.tell():
                    data = take(length, "the dataset name")
                    datasets = [data.split(b"\0", 1)[0].decode("utf-8", "replace")]
        return out, datasets, max(chunks, 0)


def importance_for(imatrix: dict[str, np.ndarray] | None, name: str, shape: tuple[int, ...],
                   where: str) -> np.ndarray | None:
    """The weights for tensor ``name`` of numpy ``shape`` (None without an entry, as llama-quantize
    quantizes such a tensor without one); an entry of the wrong size is an error, except for the
    token embedding, which llama-quantize then quantizes without one."""
    if imatrix is None or name not in imatrix:
        return None
    values = imatrix[name]
    n_per_row = shape[-1]
    n_mat = math.prod(shape[:-2]) if len(shape) > 2 else 1
    if values.size != n_per_row * n_mat:
        if name in ("token_embd.weight", "per_layer_token_embd.weight"):
            return None
        raise FileFormatError(f"{where}: the importance entry for {name!r} holds {values.size} values; its rows "
                              f"need {n_per_row * n_mat}")
    if n_mat != 1:
        raise FileFormatError(f"{where}: {name!r} is a stack of {n_mat} matrices; importance matrices for expert "
                              "tensors are not applied here yet")
    return values


def importances(imatrix: dict[str, np.ndarray] | None, names, shapes, decisions, where: str) -> list:
    """Each tensor's importance weights for its decided type (None where there is no entry or the
    type is not quantized), every type checked before anything is written."""
    out = []
    for name, shape, decision in zip(names, shapes, decisions):
        weights = importance_for(imatrix, name, tuple(shape), where) if decision.type.quantized else None
        if weights is not None and not decision.type.has_imatrix:  # every quantized type has one today
            raise ParameterError(f"{where}: {name!r} goes to {decision.type.name}, which has no importance-weighted "
                                 "quantizer")
        out.append(weights)
    return out
