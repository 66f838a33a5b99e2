"""A vectorised numpy implementation of arrowquant's RTN format: the baseline a Python user
could write today. Same parameters and codes as arrowquant for row lengths divisible by the group
size (it uses x / scale + zero_point as the format text states, so a rare tie may round apart)."""

from __future__ import annotations

import numpy as np


def quantize_rtn(w: np.ndarray, bits: int = 4, group_size: int = 128):
    g = w.reshape(-1, group_size)
    lo = g.min(axis=1, keepdims=True)
    hi = g.max(axis=1, keepdims=True)
    qmax = (1 << bits) - 1
    scale = (hi - lo) / np.float32(qmax)
    scale = np.where(scale == 0, np.float32(1), scale)
    zero_point = -lo / scale
    codes = np.clip(np.rint(g / scale + zero_point), 0, qmax).astype(np.uint8).reshape(-1)
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.uint8) * np.uint8(bits)
    packed = np.bitwise_or.reduce(codes.reshape(-1, per_byte) << shifts, axis=1).astype(np.uint8)
    return packed, scale.reshape(-1), zero_point.reshape(-1)


def dequantize_rtn(packed, scale, zero_point, numel: int, bits: int = 4, group_size: int = 128):
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.uint8) * np.uint8(bits)
    codes = ((packed[:, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(-1)[:numel]
    g = codes.reshape(-1, group_size).astype(np.float32)
    return ((g - zero_point[:, None]) * scale[:, None]).reshape(-1)
