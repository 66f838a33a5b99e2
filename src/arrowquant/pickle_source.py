"""PyTorch pickle checkpoints (``.ckpt``, ``.pt``, ``.pth``, ``pytorch_model.bin``) as a source, on
an explicit opt-in only: loaded with ``torch.load(weights_only=True)`` (which refuses any object
but tensors and plain containers), written tensor by tensor as a safetensors twin in a temporary
folder beside the output, which the pipelines then read like any safetensors checkpoint. The
twin is removed when the run ends, whatever the outcome.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import FileFormatError, ParameterError
from .safetensors_io import write_safetensors
from .sources import PICKLE_SUFFIXES, file_kind, missing, refuse_gguf, refuse_pickle

_TORCH_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
                 "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
                 "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}


def _weights_in(folder: Path) -> tuple[list[Path], bool]:
    """(pickled weight files, whether any safetensors weights exist) in a model folder and its
    component folders."""
    pickles, safetensors = [], False
    for p in [*folder.iterdir(), *(q for d in folder.iterdir() if d.is_dir() for q in d.iterdir())]:
        if p.is_file() and p.suffix in PICKLE_SUFFIXES:
            pickles.append(p)
        safetensors = safetensors or p.name.endswith(".safetensors")
    return sorted(pickles), safetensors


def state_dict(path: Path) -> dict:
    """The tensors of a pickle checkpoint: its ``state_dict`` entry (Lightning ``.ckpt``) or the
    dictionary itself; anything but tensors is left out."""
    try:
        import torch
    except ImportError:
        raise ParameterError(f"{path}: reading a pickle needs torch: pip install 'arrowquantize[torch]'") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=file_kind_is_zip(path))
    except Exception as error:  # torch raises many kinds for a damaged or hostile file
        raise FileFormatError(f"{path}: torch.load(weights_only=True) refused it: "
                              f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise FileFormatError(f"{path}: holds a {type(loaded).__name__}, not a dictionary of tensors")
    tensors = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise FileFormatError(f"{path}: holds no tensors")
    return tensors


def file_kind_is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def write_twin(path: Path, out: Path) -> None:
    """The tensors of the pickle ``path`` as the safetensors file ``out``, one tensor at a time."""
    import torch
    tensors = state_dict(path)
    specs = []
    for name, t in tensors.items():
        dtype = _TORCH_DTYPES.get(str(t.dtype).removeprefix("torch."))
        if dtype is None:
            raise FileFormatError(f"{path}: tensor {name!r} is {t.dtype}, which safetensors cannot hold here")
        specs.append((name, dtype, tuple(t.shape), t.numel() * t.element_size()))
    chunks = (t.detach().contiguous().reshape(-1).view(torch.uint8).numpy() for t in tensors.values())
    write_safetensors(out, specs, chunks)


@contextmanager
def readable(path: Path, allow_pickle: bool, near: Path, gguf_advice: str) -> Iterator[Path]:
    """``path``, or a safetensors twin of its pickles (with ``allow_pickle``) in a temporary folder
    beside ``near`` (the output). Anything else arrowquant cannot read as safetensors is one error."""
    if not path.exists():
        raise missing(path)
    pickles: list[Path] = []
    if path.is_file():
        kind = file_kind(path)
        if kind == "gguf":
            raise refuse_gguf(path, gguf_advice)
        if kind == "pickle":
            pickles = [path]
    elif path.is_dir():
        found, has_safetensors = _weights_in(path)
        pickles = [] if has_safetensors else found
    if not pickles:
        yield path
        return
    if not allow_pickle:
        raise refuse_pickle(path, pickles if path.is_dir() else None)
    parent = near.parent if near.parent.is_dir() else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix=".arrowquant-pickle-", dir=parent) as tmp:
        if path.is_file():
            twin = Path(tmp) / (path.stem + ".safetensors")
            write_twin(path, twin)
            yield twin
            return
        twin = Path(tmp) / path.name
        for source in [path, *(d for d in path.iterdir() if d.is_dir())]:
            target = twin / source.relative_to(path)
            target.mkdir(parents=True, exist_ok=True)
            for p in source.iterdir():
                if not p.is_file() or p.name.endswith(".bin.index.json"):
                    continue  # the shards become safetensors files of their own; their index would mislead
                if p.suffix in PICKLE_SUFFIXES:
                    write_twin(p, target / (p.stem + ".safetensors"))
                else:
                    shutil.copyfile(p, target / p.name)
        yield twin
