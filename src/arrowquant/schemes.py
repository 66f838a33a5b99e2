"""Every rule of every encoding of arrowquant's packed format (docs/format.md), in one place.

Two schemes:

- ``affine`` (format version 1): groups of G values along a row, each with a float32 scale and
  zero point, codes of 2, 4 or 8 bits packed LSB-first.
- ``kquant`` (format version 2): the flattened tensor cut into super-blocks of 256 values (the
  last one padded with zeros), optionally rotated block by block (``hadamard256``: random signs, then a Walsh-Hadamard
  transform scaled by 1/16), then coded in k-quant super-blocks of 256 values whose sub-block
  scales (and minimums) are small integers against per-super-block float16 scales: the block
  layouts of ggml's Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (2..6 bits) and Q8_0 (8 bits), byte for byte.
  The rotation is what a GGUF file cannot hold: it makes heavy-tailed rows nearly Gaussian, which
  lowers the error on real weights at the same size.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .errors import ParameterError

SCHEMES = ("affine", "kquant")
DEFAULT_SCHEME = "affine"
ROTATIONS = ("none", "hadamard256")
BIT_WIDTHS_BY_SCHEME = {"affine": (2, 4, 8), "kquant": (2, 3, 4, 5, 6, 8)}
# Values per kquant super-block: rows are padded, rotated and coded in units of this many.
KQUANT_BLOCK = 256
# The ggml block layout that holds each kquant bit width.
KQUANT_BLOCK_TYPES = {2: "Q2_K", 3: "Q3_K", 4: "Q4_K", 5: "Q5_K", 6: "Q6_K", 8: "Q8_0"}


# What the whole-model pipelines use when no method is named: affine search costs ~7x RTN for
# 8% lower error; kquant search (Q4_K / Q5_K) costs ~18x the fast fit (rtn) for 2.5%.
DEFAULT_PIPELINE_METHODS = {"affine": "search", "kquant": "rtn"}


def check_scheme(scheme: Any) -> str:
    if scheme not in SCHEMES:
        raise ParameterError(f"scheme must be one of {', '.join(map(repr, SCHEMES))}; got {scheme!r}")
    return scheme


def check_bits_for_scheme(bit_width: Any, scheme: str = DEFAULT_SCHEME) -> int:
    allowed = BIT_WIDTHS_BY_SCHEME[check_scheme(scheme)]
    if isinstance(bit_width, bool) or not isinstance(bit_width, int) or bit_width not in allowed:
        widths = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}"
        hint = " (3, 5 and 6 bits need scheme='kquant')" if scheme == "affine" and bit_width in (3, 5, 6) else ""
        raise ParameterError(f"bit_width must be {widths} for scheme {scheme!r}; got {bit_width!r}{hint}")
    return bit_width


def check_rotate(rotate: Any) -> bool:
    if not isinstance(rotate, bool):
        raise ParameterError(f"rotate must be True or False; got {rotate!r}")
    return rotate


def rotation_name(rotate: bool) -> str:
    return "hadamard256" if rotate else "none"


def kquant_block_type(bit_width: int):
    """The GgufType whose block layout holds this kquant bit width."""
    from .gguf.types import gguf_type

    return gguf_type(KQUANT_BLOCK_TYPES[bit_width])


def kquant_blocks(numel: int) -> int:
    """Super-blocks of a kquant tensor: its flattened values, the last block padded with zeros."""
    return -(-numel // KQUANT_BLOCK)


def kquant_bytes(bit_width: int, shape: Sequence[int]) -> int:
    """Bytes of quantized_data of a kquant tensor of this shape."""
    return kquant_block_type(bit_width).encoded_bytes(kquant_blocks(math.prod(int(d) for d in shape)) * KQUANT_BLOCK)


def kquant_block_bits_per_weight(bit_width: int) -> float:
    """Bits per weight of the blocks alone (no row padding): 2.625, 3.4375, 4.5, 5.5, 6.5625, 8.5."""
    return kquant_block_type(bit_width).bits_per_weight


def bits_per_weight(nbytes: int, numel: int) -> float:
    """Stored bits per weight: every byte of codes and parameters over the tensor's elements."""
    return 8.0 * nbytes / numel if numel else 0.0
