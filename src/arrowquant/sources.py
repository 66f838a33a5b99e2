"""What a model path holds, told before anything is parsed, so that a path arrowquant cannot read
as safetensors gets one line saying what it is and what to do: a Hugging Face Hub id (download it
first), a PyTorch pickle (``--allow-pickle``), a GGUF file (``arrowquant gguf`` re-quantizes it).

Pickles are read only on an explicit opt-in: unpickling can run code hidden in the file, so even
then they go through ``torch.load(weights_only=True)`` (pickle_source.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import FileFormatError, MissingFileError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def missing(path: Path) -> MissingFileError:
    """The error for a path that does not exist (a Hub id said as such)."""
    text = str(path)
    if (_HUB_ID.fullmatch(text) and not text.endswith((".safetensors", ".json", ".gguf") + PICKLE_SUFFIXES)
            and not Path(text.split("/")[0]).is_dir()):  # demo/model with demo/ present is a local path
        return MissingFileError(f"{text}: no such file or directory; if this is a Hugging Face Hub id, download it "
                                f"first (huggingface-cli download {text} --local-dir {text.split('/')[1]}) and pass "
                                "that folder: arrowquant reads local files only")
    return MissingFileError(f"{path}: no such file or directory")


def file_kind(path: Path) -> str:
    """'safetensors', 'gguf', 'aq' (Arrow IPC), 'pickle' or 'unknown' (left to the readers' own
    checks), from the file's first bytes and, for pickles, its suffix."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return "unknown"  # the reader reports why it cannot open it
    if head[8:9] == b"{":  # safetensors: an 8-byte header length, then the JSON header
        return "safetensors"
    if head[:6] == b"ARROW1":
        return "aq"
    if head[:4] == b"GGUF":
        return "gguf"
    zip_or_pickle = head[:4] == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)
    if zip_or_pickle or path.suffix in PICKLE_SUFFIXES:
        return "pickle"
    return "unknown"


def pickle_files(folder: Path) -> list[Path]:
    """The pickled weight files of a folder without safetensors weights (pytorch_model.bin, its
    shards, model.ckpt, ...)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)


def refuse_pickle(path: Path, files: list[Path] | None = None) -> FileFormatError:
    what = f"holds PyTorch pickle weights ({', '.join(p.name for p in files[:3])})" if files else \
        "is a PyTorch pickle checkpoint"
    return FileFormatError(f"{path}: {what}, not safetensors; unpickling can run code hidden in the file, so "
                           "arrowquant reads pickles only when asked: pass --allow-pickle (allow_pickle=True; needs "
                           "the torch extra, and loads with torch.load(weights_only=True)), or convert to "
                           "safetensors first")


def refuse_gguf(path: Path, command: str) -> FileFormatError:
    return FileFormatError(f"{path}: a GGUF file, not safetensors; {command}")
