"""An independent pure-numpy implementation of arrowquant's packed format (docs/format.md).

Written from the format description, not from the C++ code: the tests decode every output
with it and compare, so a kernel bug cannot hide behind a matching bug in a shared helper.
"""

from __future__ import annotations

import math

import numpy as np


def geometry(shape) -> tuple[int, int]:
    """(rows, cols): rows = shape[0] for ndim >= 2, else the tensor is one row."""
    shape = [int(d) for d in shape]
    if len(shape) >= 2:
        return shape[0], math.prod(shape[1:])
    return 1, (shape[0] if shape else 1)


def unpack_codes(data: bytes, numel: int, bits: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    assert raw.size == (numel * bits + 7) // 8, "quantized_data has the wrong length"
    per_byte = 8 // bits
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits).astype(np.uint8)
    codes = (raw[:, None] >> shifts[None, :]) & np.uint8((1 << bits) - 1)
    return codes.reshape(-1)[:numel]


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    per_byte = 8 // bits
    n = codes.size
    padded = np.zeros(-(-n // per_byte) * per_byte, dtype=np.uint32)
    padded[:n] = codes
    shifts = np.arange(per_byte, dtype=np.uint32) * bits
    return (padded.reshape(-1, per_byte) << shifts).sum(axis=1).astype(np.uint8).tobytes()


def group_index_matrix(rows: int, cols: int, group_size: int) -> np.ndarray:
    """For every element, the index of its group in (row, group) order."""
    groups_per_row = -(-cols // group_size)
    return (np.arange(rows)[:, None] * groups_per_row + (np.arange(cols) // group_size)[None, :])


def decode(data: bytes, scales, zero_points, shape, bits: int, group_size: int) -> np.ndarray:
    """x = (q - zero_point) * scale in float32, returned with the tensor's shape."""
    rows, cols = geometry(shape)
    numel = rows * cols
    scales = np.asarray(scales, dtype=np.float32)
    zero_points = np.asarray(zero_points, dtype=np.float32)
    assert scales.size == rows * -(-cols // group_size) if numel else scales.size == 0
    codes = unpack_codes(data, numel, bits).reshape(rows, cols).astype(np.float32)
    if numel == 0:
        return codes.reshape(shape)
    g = group_index_matrix(rows, cols, group_size)
    return ((codes - zero_points[g]) * scales[g]).astype(np.float32).reshape([int(d) for d in shape])


def decode_row(table, i: int) -> np.ndarray:
    row = {name: table.column(name)[i].as_py() for name in table.column_names}
    return decode(row["quantized_data"], row["scales"], row["zero_points"], row["shape"],
                  row["bit_width"], row["group_size"])


def encode(x: np.ndarray, bits: int, group_size: int, symmetric: bool):
    """The RTN encoder of docs/format.md in numpy float32: (packed bytes, scales, zero points)."""
    x = np.asarray(x, dtype=np.float32)
    rows, cols = geometry(x.shape)
    flat = x.reshape(rows, cols)
    qmax = (1 << bits) - 1
    half = np.float32(1 << (bits - 1))
    codes = np.zeros((rows, cols), dtype=np.uint8)
    scales, zero_points = [], []
    for r in range(rows):
        for c0 in range(0, cols, group_size):
            g = flat[r, c0:c0 + group_size]
            lo, hi = np.float32(g.min()) + np.float32(0), np.float32(g.max()) + np.float32(0)
            if symmetric:
                m = hi if abs(hi) > abs(lo) else lo
                scale = np.float32(m / -half)
                if scale == 0:
                    scale, zp, q = np.float32(0), half, np.full(g.size, 1 << (bits - 1))
                else:
                    zp = half
                    q = np.clip(np.round((g - np.float32(0)) / scale + half), 0, qmax)
            else:
                scale = np.float32((np.float64(hi) - np.float64(lo)) / qmax)
                if scale == 0:
                    scale, zp, q = lo, np.float32(-1), np.zeros(g.size)
                else:
                    zp = np.float32(-np.float64(lo) / np.float64(scale))
                    with np.errstate(over="ignore"):
                        q = np.clip(np.round((g - lo) / scale), 0, qmax)
            codes[r, c0:c0 + group_size] = q
            scales.append(scale)
            zero_points.append(zp)
    return pack_codes(codes.reshape(-1), bits), np.array(scales, np.float32), np.array(zero_points, np.float32)
