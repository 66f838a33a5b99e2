"""A GGUF model as its readers see it: one file, or a split model's shards read as one
(:class:`GgufModel`: GgufFile's interface over every shard, each shard's name, number and count
checked, the tensors of all), and its conversion back to safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, MissingFileError
from .container import GgufFile, GgufTensor, Value, original_shape
from .splits import MAX_SHARDS, SHARD_NAME, SPLIT_KEYS, shard_path


def _split_value(f: GgufFile, key: str, limit: int) -> int | None:
    value = f.metadata.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise FileFormatError(f"{f.path}: {key} is {value!r}; expected a count from 0 to {limit}")
    return value


class GgufModel:
    """A GGUF model, one file or split, read as one: ``path`` (the file with the metadata),
    ``metadata`` / ``typed_metadata()`` (the split.* keys left out), ``tensors`` in file order,
    ``shard_of`` (name -> shard index), ``raw``, ``dequantize``, ``original_shape``."""

    def __init__(self, path: Any) -> None:
        path = Path(path)
        self.shards: list[GgufFile] = []
        try:
            given = GgufFile(path)
            self.shards.append(given)
            count = _split_value(given, "split.count", MAX_SHARDS)
            if count is not None and count > 1:
                self._open_shards(given, count)
            elif count == 0:
                raise FileFormatError(f"{path}: split.count is 0")
        except BaseException:
            self.close()
            raise
        self.path = self.shards[0].path
        self.metadata = {k: v for k, v in self.shards[0].metadata.items() if k not in SPLIT_KEYS}
        self.tensors: dict[str, GgufTensor] = {}
        self.shard_of: dict[str, int] = {}
        for index, shard in enumerate(self.shards):
            for name, tensor in shard.tensors.items():
                if name in self.tensors:
                    self.close()
                    raise FileFormatError(f"{shard.path}: tensor {name!r} is also in {self.shards[self.shard_of[name]].path}")
                self.tensors[name], self.shard_of[name] = tensor, index
        expected = _split_value(self.shards[0], "split.tensors.count", 2**31 - 1)
        if len(self.shards) > 1 and expected is not None and expected != len(self.tensors):
            self.close()
            raise FileFormatError(f"{self.path}: split.tensors.count says {expected} tensors; its "
                                  f"{len(self.shards)} shards hold {len(self.tensors)}")

    def _open_shards(self, given: GgufFile, count: int) -> None:
        no = _split_value(given, "split.no", count - 1)
        if no is None:
            raise FileFormatError(f"{given.path}: split.count {count} without split.no")
        m = SHARD_NAME.fullmatch(given.path.name)
        if not m or int(m["no"]) != no + 1 or int(m["count"]) != count:
            raise FileFormatError(f"{given.path}: shard {no + 1} of {count} of a split model, but its name is not "
                                  f"PREFIX-{no + 1:05d}-of-{count:05d}.gguf, so the other shards cannot be found")
        prefix = given.path.with_name(m["prefix"])
        paths = [shard_path(prefix, i, count) for i in range(count)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise MissingFileError(f"{given.path}: shard {no + 1} of {count}; missing {', '.join(map(str, missing[:3]))}"
                                   + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
        self.shards = []
        for i, p in enumerate(paths):
            shard = given if i == no else GgufFile(p)
            if i != no:
                given_count = _split_value(shard, "split.count", MAX_SHARDS)
                if given_count != count or _split_value(shard, "split.no", MAX_SHARDS) != i:
                    shard.close()
                    raise FileFormatError(f"{p}: says shard {shard.metadata.get('split.no')!r} of "
                                          f"{shard.metadata.get('split.count')!r}; expected shard {i} of {count} "
                                          f"(as {given.path} says)")
            self.shards.append(shard)
        if given not in self.shards:
            given.close()

    def __enter__(self) -> "GgufModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    def typed_metadata(self) -> dict[str, Value]:
        return {k: v for k, v in self.shards[0].typed_metadata().items() if k not in SPLIT_KEYS}

    def raw(self, name: str) -> np.ndarray:
        return self._shard(name).raw(name)

    def original_shape(self, name: str) -> tuple[int, ...]:
        return original_shape(self._shard(name).tensors[name], self.metadata, self.path)

    def dequantize(self, name: str, num_threads: int | None = None) -> np.ndarray:
        return self._shard(name).dequantize(name, num_threads).reshape(self.original_shape(name))

    def _shard(self, name: str) -> GgufFile:
        if name not in self.shard_of:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        return self.shards[self.shard_of[name]]


def open_model(path: Any) -> GgufModel:
    """A GGUF model, one file or split (given any shard), read as one."""
    return GgufModel(path)


def gguf_to_safetensors(source: Any, target: Any, dtype: Any = None, *, overwrite: bool = False,
                        progress_callback=None) -> None:
    """Decode every tensor of a GGUF model (one file or split) into a safetensors file: quantized tensors as float32
    (or ``dtype``), float tensors as stored (or ``dtype``), in the original shapes."""
    from ..aq_file import _safetensors_name
    from ..paths import check_output_apart
    from ..safetensors_io import write_safetensors
    from ..tensor import SAFETENSORS_DTYPES, to_dtype

    target = Path(target)
    if dtype is not None:
        to_dtype(np.zeros(1, np.float32), dtype)  # validate before writing anything
    with GgufModel(source) as f:
        check_output_apart(target, [s.path for s in f.shards])
        names = f.names
        specs = []
        for name in names:
            t = f.tensors[name]
            stored = t.type.name if t.type.name in ("F32", "F16", "BF16") else "F32"
            out_type = _safetensors_name(dtype) if dtype is not None else stored
            specs.append((name, out_type, f.original_shape(name), t.numel * SAFETENSORS_DTYPES[out_type].itemsize))
        total = sum(f.tensors[n].nbytes for n in names) or 1

        def chunks():
            done = 0
            for name, (_, out_type, _, _) in zip(names, specs):
                yield np.ascontiguousarray(to_dtype(f.dequantize(name), out_type))
                done += f.tensors[name].nbytes
                if progress_callback is not None:
                    progress_callback(name, done / total)

        write_safetensors(target, specs, chunks(), {"converted_by": "arrowquant", "source": Path(source).name},
                          overwrite=overwrite)
