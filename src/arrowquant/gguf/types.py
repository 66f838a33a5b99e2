"""GGUF tensor types and the llama.cpp-style mixes, as the compiled core defines them.

The block size and bytes per block of every type come from the core's type table
(cpp/kernels/gguf/gguf_kernels.h): nothing here restates them.
"""

from __future__ import annotations

from .. import _core


class GgufType:
    __slots__ = ("id", "name", "block_size", "block_bytes", "has_search", "has_imatrix")

    def __init__(self, type_id: int, name: str, block_size: int, block_bytes: int, has_search: bool,
                 has_imatrix: bool = False) -> None:
        self.id, self.name, self.block_size, self.block_bytes = type_id, name, block_size, block_bytes
        self.has_search = has_search  # its own search encoder (else method="search" writes ggml's bytes)
        self.has_imatrix = has_imatrix  # ggml's importance-weighted quantizer (llama-quantize --imatrix)

    @property
    def quantized(self) -> bool:
        return self.block_size > 1

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.block_bytes / self.block_size

    def encoded_bytes(self, numel: int) -> int:
        return numel // self.block_size * self.block_bytes

    def __repr__(self) -> str:
        return f"GgufType({self.name})"


GGUF_TYPES: tuple[GgufType, ...] = tuple(GgufType(*row) for row in _core.gguf_types())
_BY_NAME = {t.name: t for t in GGUF_TYPES}
_BY_ID = {t.id: t for t in GGUF_TYPES}


def type_by_id(type_id: int) -> GgufType | None:
    return _BY_ID.get(type_id)


def gguf_type(name: str) -> GgufType:
    """A type by its ggml name (case-insensitive): "Q4_K", "q8_0", "F16", ..."""
    t = _BY_NAME.get(str(name).upper()) if isinstance(name, str) else None
    if t is None:
        raise KeyError(name)
    return t


# llama.cpp's file types (llama.h LLAMA_FTYPE_MOSTLY_*), written as general.file_type, and the
# base tensor type of each mix; the per-tensor rules in policy.py raise some tensors above it.
MIXES: dict[str, tuple[int, str]] = {
    "F32": (0, "F32"), "F16": (1, "F16"), "BF16": (32, "BF16"),
    "Q4_0": (2, "Q4_0"), "Q4_1": (3, "Q4_1"), "Q8_0": (7, "Q8_0"), "Q5_0": (8, "Q5_0"), "Q5_1": (9, "Q5_1"),
    "Q2_K": (10, "Q2_K"), "Q3_K_S": (11, "Q3_K"), "Q3_K_M": (12, "Q3_K"), "Q3_K_L": (13, "Q3_K"),
    "Q4_K_S": (14, "Q4_K"), "Q4_K_M": (15, "Q4_K"), "Q5_K_S": (16, "Q5_K"), "Q5_K_M": (17, "Q5_K"),
    "Q6_K": (18, "Q6_K"), "IQ4_NL": (25, "IQ4_NL"), "IQ4_XS": (30, "IQ4_XS"),
}
# Single tensor types a mix name may also be given as (Q4_K means Q4_K_M, as llama-quantize reads it).
MIX_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
