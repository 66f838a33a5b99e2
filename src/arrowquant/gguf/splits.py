"""Split GGUF models (llama.cpp's gguf-split, llama-quantize --keep-split): one model in files
``PREFIX-00001-of-0000N.gguf`` ... ``PREFIX-0000N-of-0000N.gguf``, each a complete GGUF file; the
first holds the model's metadata, every one ``split.no`` (u16, from 0), ``split.count`` (u16) and
``split.tensors.count`` (i32, the whole model's). llama.cpp's loader, given any of them, reads
them all; so does model_file.GgufModel.

Written here by size (``split_max_size``, gguf-split's --split-max-size), by tensor count
(``split_max_tensors``) or along the source's own shards (``keep_split``). ComfyUI-GGUF,
diffusers and stable-diffusion.cpp read no split files, so only llama.cpp's models are split.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import ParameterError
from ..paths import atomic_file, check_file_output
from .container import DEFAULT_ALIGNMENT, INT32, UINT16, TensorSpec, Value, gguf_header, write_gguf, write_tensor_data

SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
SHARD_NAME = re.compile(r"(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf")
MAX_SHARDS = 65535  # split.count is a u16


def shard_path(prefix: Path, index: int, count: int) -> Path:
    """llama.cpp's llama_split_path: ``PREFIX-%05d-of-%05d.gguf``, shards numbered from 1."""
    return prefix.parent / f"{prefix.name}-{index + 1:05d}-of-{count:05d}.gguf"


def output_prefix(out: Path) -> Path:
    """The shards of ``model.gguf`` are ``model-00001-of-0000N.gguf`` (llama-quantize takes the
    output as the prefix itself; a trailing .gguf is dropped so it does not appear twice)."""
    return out.with_name(out.name[:-len(".gguf")]) if out.name.endswith(".gguf") else out


# ----------------------------------------------------------------------------------------------
# Writing

def parse_size(value: Any) -> int | None:
    """gguf-split's --split-max-size: N followed by M (10^6 bytes) or G (10^9), or a byte count."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([MG])\s*", value) if isinstance(value, str) else None
    if not m or int(m[1]) <= 0:
        raise ParameterError(f"split_max_size must be a size such as 500M or 2G (10^6 / 10^9 bytes, as gguf-split) "
                             f"or a positive byte count; got {value!r}")
    return int(m[1]) * (10**6 if m[2] == "M" else 10**9)


class SplitPlan:
    """How to cut a model's tensors into shards: at most ``max_bytes`` of tensor data or
    ``max_tensors`` tensors per shard (a tensor larger than ``max_bytes`` gets a shard of its
    own), or along the source's shards (``keep_split``)."""

    def __init__(self, max_bytes: int | None = None, max_tensors: int | None = None, keep_split: bool = False):
        self.max_bytes, self.max_tensors, self.keep_split = max_bytes, max_tensors, keep_split

    @classmethod
    def parse(cls, split_max_size: Any = None, split_max_tensors: Any = None, keep_split: Any = False) -> "SplitPlan":
        if not isinstance(keep_split, bool):
            raise ParameterError(f"keep_split must be True or False; got {keep_split!r}")
        if split_max_tensors is not None and (isinstance(split_max_tensors, bool) or not isinstance(
                split_max_tensors, int) or split_max_tensors < 1):
            raise ParameterError(f"split_max_tensors must be a positive integer; got {split_max_tensors!r}")
        given = [split_max_size is not None, split_max_tensors is not None, keep_split]
        if sum(given) > 1:
            raise ParameterError("keep_split= (--keep-split), split_max_size= (--split-max-size) and "
                                 "split_max_tensors= (--split-max-tensors) each say how to split; give one")
        return cls(parse_size(split_max_size), split_max_tensors, keep_split)

    @property
    def given(self) -> bool:
        return self.max_bytes is not None or self.max_tensors is not None or self.keep_split

    def shards(self, specs: list[TensorSpec], source_shards: list[int] | None = None) -> list[int]:
        """The shard index of each tensor, in order (never an empty shard)."""
        if self.keep_split:
            if source_shards is None:
                raise ParameterError("keep_split= (--keep-split) keeps a split GGUF source's shards; this source is "
                                     "not a GGUF file (use split_max_size= / --split-max-size)")
            if source_shards != sorted(source_shards):  # the source's order is kept: shards stay contiguous
                raise ParameterError("keep_split: the source's shards are not in tensor order")
            order = {s: i for i, s in enumerate(dict.fromkeys(source_shards))}
            return [order[s] for s in source_shards]
        out, shard, count, size = [], 0, 0, 0
        for spec in specs:
            padded = spec.nbytes + (-spec.nbytes % DEFAULT_ALIGNMENT)
            full = (self.max_tensors is not None and count == self.max_tensors) or \
                   (self.max_bytes is not None and count > 0 and size + padded > self.max_bytes)
            if full:
                shard, count, size = shard + 1, 0, 0
            out.append(shard)
            count, size = count + 1, size + padded
        return out


def _shard_metadata(metadata: dict[str, Any], index: int, count: int, n_tensors: int) -> dict[str, Any]:
    """A shard's metadata: the model's in the first only, then the split keys (llama-quantize's order)."""
    return {**(metadata if index == 0 else {}), "split.no": Value(UINT16, index), "split.count": Value(UINT16, count),
            "split.tensors.count": Value(INT32, n_tensors)}


def planned_sizes(out: Path, metadata: dict[str, Any], specs: list[TensorSpec],
                  shard_of: list[int]) -> list[tuple[Path, int]]:
    """[(file, size)] that write_gguf_shards would write, computed without writing (--dry-run)."""
    paths = planned_paths(out, shard_of)
    sizes = []
    for index, path in enumerate(paths):
        group = [s for s, i in zip(specs, shard_of) if i == index]
        header, alignment = gguf_header(metadata if len(paths) == 1 else
                                        _shard_metadata(metadata, index, len(paths), len(specs)), group)
        sizes.append((path, len(header) + sum(s.nbytes + (-s.nbytes % alignment) for s in group)))
    return sizes


def planned_paths(out: Path, shard_of: list[int]) -> list[Path]:
    """The files ``shard_of`` makes of ``out``: ``out`` itself for one shard."""
    count = max(shard_of) + 1 if shard_of else 1
    if count > MAX_SHARDS:
        raise ParameterError(f"{out}: {count} shards; a split GGUF holds at most {MAX_SHARDS} (split.count is a u16)")
    return [out] if count == 1 else [shard_path(output_prefix(out), i, count) for i in range(count)]


def write_gguf_shards(out: Path, metadata: dict[str, Any], specs: list[TensorSpec], chunks: Iterable[Any],
                      shard_of: list[int], *, overwrite: bool = False) -> list[tuple[Path, int]]:
    """Write ``specs`` into the shards ``shard_of`` assigns them (``out`` itself if there is one
    shard), the metadata in the first with the split keys after it, as llama-quantize writes them.
    Every shard is staged first and all are published only when all are complete. Returns
    [(path, size)]."""
    paths = planned_paths(out, shard_of)
    if len(paths) == 1:
        return [(out, write_gguf(out, metadata, specs, chunks, overwrite=overwrite))]
    count = len(paths)
    for path in paths:
        check_file_output(path, overwrite)
    groups = [[s for s, i in zip(specs, shard_of) if i == index] for index in range(count)]
    iterator: Iterator[Any] = iter(chunks)
    sizes = []
    with contextlib.ExitStack() as stack:
        for index, (path, group) in enumerate(zip(paths, groups)):
            header, alignment = gguf_header(_shard_metadata(metadata, index, count, len(specs)), group)
            tmp = stack.enter_context(atomic_file(path, overwrite))  # published when every shard is written
            with open(tmp, "wb") as f:
                f.write(header)
                write_tensor_data(f, path, group, iterator, alignment)
                sizes.append(f.tell())
    return list(zip(paths, sizes))


def shard_report(report: dict[str, Any], written: list[tuple[Path, int]]) -> dict[str, Any]:
    """A file report for output written as ``written`` shards: the output is the first shard
    (the one llama.cpp is given), ``shards`` lists every one."""
    if len(written) > 1:
        report["shards"] = [{"path": str(path), "bytes": size} for path, size in written]
    return report
