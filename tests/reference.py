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
    if row.get("scheme") == "kquant":
        return decode_kquant(row["quantized_data"], row["shape"], row["bit_width"], row["rotation"])
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


# ------------------------------------------------------------------------------------------------
# Format version 2, scheme "kquant" (docs/format.md, "Version 2"), written from the document.

KQUANT_LAYOUTS = {2: ("Q2_K", 256, 84), 3: ("Q3_K", 256, 110), 4: ("Q4_K", 256, 144), 5: ("Q5_K", 256, 176),
                  6: ("Q6_K", 256, 210), 8: ("Q8_0", 32, 34)}
ROTATION_SIGN_HEX = "5c0fb783ac8c7a2db8453a87531cedaa185e57da8b34e7e541cf9f209a2c478c"
F32 = np.float32


def _f16(raw: np.ndarray) -> np.ndarray:
    """Little-endian half floats in the last axis of 2 bytes -> float32 (exact)."""
    return np.ascontiguousarray(raw).view("<f2").astype(F32)[..., 0]


def _bits(byte_array: np.ndarray, bit) -> np.ndarray:
    return (byte_array >> np.uint8(bit)) & np.uint8(1)


def _decode_q8_0(b: np.ndarray) -> np.ndarray:  # b: (blocks, 34)
    d = _f16(b[:, 0:2])
    q = b[:, 2:34].view(np.int8).astype(F32)
    return d[:, None] * q


def _decode_q2_k(b: np.ndarray) -> np.ndarray:  # (blocks, 84)
    scales, qs = b[:, 0:16], b[:, 16:80]
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
    y = np.empty((b.shape[0], 256), F32)
    for h in range(2):
        for j in range(4):
            for part in range(2):  # sub-block k (bytes qs[32h + l]) and k + 1 (bytes qs[32h + 16 + l])
                k = 8 * h + 2 * j + part
                byte = qs[:, 32 * h + 16 * part: 32 * h + 16 * part + 16]
                q = ((byte >> np.uint8(2 * j)) & np.uint8(3)).astype(F32)
                dl = d * (scales[:, k] & 15).astype(F32)
                ml = dmin * (scales[:, k] >> 4).astype(F32)
                start = 128 * h + 32 * j + 16 * part
                y[:, start:start + 16] = dl[:, None] * q - ml[:, None]
    return y


def _decode_q3_k(b: np.ndarray) -> np.ndarray:  # (blocks, 110)
    hmask, qs, scales, d = b[:, 0:32], b[:, 32:96], b[:, 96:108], _f16(b[:, 108:110])
    c = np.empty((b.shape[0], 16), np.int32)
    for k in range(16):
        low4 = (scales[:, k] & 15) if k < 8 else (scales[:, k - 8] >> 4)
        high2 = (scales[:, 8 + k % 4] >> np.uint8(2 * (k // 4))) & 3
        c[:, k] = low4.astype(np.int32) | (high2.astype(np.int32) << 4)
    y = np.empty((b.shape[0], 256), F32)
    for h in range(2):
        for j in range(4):
            for part in range(2):
                k = 8 * h + 2 * j + part
                t = np.arange(16 * part, 16 * part + 16)
                byte = qs[:, 32 * h + t]
                q = ((byte >> np.uint8(2 * j)) & np.uint8(3)).astype(np.int32)
                high = _bits(hmask[:, t], 4 * h + j)
                code = (q - np.where(high == 1, 0, 4)).astype(F32)
                dl = d * (c[:, k] - 32).astype(F32)
                start = 128 * h + 32 * j + 16 * part
                y[:, start:start + 16] = dl[:, None] * code
    return y


def _k4_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K: the eight 6-bit scale codes and min codes of each block."""
    sc = np.empty((scales.shape[0], 8), np.int32)
    m = np.empty((scales.shape[0], 8), np.int32)
    s = scales.astype(np.int32)
    for k in range(8):
        if k < 4:
            sc[:, k], m[:, k] = s[:, k] & 63, s[:, k + 4] & 63
        else:
            sc[:, k] = (s[:, k + 4] & 15) | ((s[:, k - 4] >> 6) << 4)
            m[:, k] = (s[:, k + 4] >> 4) | ((s[:, k] >> 6) << 4)
    return sc, m


def _decode_q4_q5_k(b: np.ndarray, five: bool) -> np.ndarray:
    d, dmin, scales = _f16(b[:, 0:2]), _f16(b[:, 2:4]), b[:, 4:16]
    qh, qs = (b[:, 16:48], b[:, 48:176]) if five else (None, b[:, 16:144])
    sc, m = _k4_scales(scales)
    y = np.empty((b.shape[0], 256), F32)
    for p in range(4):
        byte = qs[:, 32 * p: 32 * p + 32]
        for part, nibble in ((0, byte & 15), (1, byte >> 4)):
            k = 2 * p + part
            q = nibble.astype(np.int32)
            if five:
                q = q + 16 * _bits(qh, k).astype(np.int32)
            dl = d * sc[:, k].astype(F32)
            ml = dmin * m[:, k].astype(F32)
            y[:, 64 * p + 32 * part: 64 * p + 32 * part + 32] = dl[:, None] * q.astype(F32) - ml[:, None]
    return y


def _decode_q6_k(b: np.ndarray) -> np.ndarray:  # (blocks, 210)
    ql, qh, scales, d = b[:, 0:128], b[:, 128:192], b[:, 192:208].view(np.int8), _f16(b[:, 208:210])
    y = np.empty((b.shape[0], 256), F32)
    for h in range(2):
        for l in range(32):
            L, L2, Q, i = ql[:, 64 * h + l].astype(np.int32), ql[:, 64 * h + 32 + l].astype(np.int32), \
                qh[:, 32 * h + l].astype(np.int32), l // 16
            codes = [((L & 15) | (((Q >> 0) & 3) << 4)) - 32, ((L2 & 15) | (((Q >> 2) & 3) << 4)) - 32,
                     ((L >> 4) | (((Q >> 4) & 3) << 4)) - 32, ((L2 >> 4) | (((Q >> 6) & 3) << 4)) - 32]
            for n, code in enumerate(codes):
                scale = d * scales[:, 8 * h + i + 2 * n].astype(F32)
                y[:, 128 * h + 32 * n + l] = scale * code.astype(F32)
    return y


def rotation_signs() -> np.ndarray:
    raw = np.frombuffer(bytes.fromhex(ROTATION_SIGN_HEX), np.uint8)
    bits = np.array([(raw[i // 8] >> (i % 8)) & 1 for i in range(256)])
    return np.where(bits == 1, F32(-1), F32(1))


def inverse_rotation(y: np.ndarray) -> np.ndarray:
    """x = s * (H y) / 16 per 256-value block, butterflies in float32 in the documented order."""
    z = y.reshape(-1, 256).astype(F32).copy()
    h = 1
    while h < 256:
        idx = np.array([i for i in range(256) if not i & h])
        a, b = z[:, idx].copy(), z[:, idx + h].copy()
        z[:, idx], z[:, idx + h] = a + b, a - b
        h *= 2
    return z * (rotation_signs() * F32(1 / 16))


def decode_kquant(data: bytes, shape, bits: int, rotation: str) -> np.ndarray:
    """Decode a kquant row: super-blocks of the flattened tensor, rotation undone, padding dropped."""
    name, per_block, block_bytes = KQUANT_LAYOUTS[bits]
    numel = math.prod(int(d) for d in shape)
    blocks = -(-numel // 256)
    raw = np.frombuffer(data, np.uint8)
    assert raw.size == blocks * 256 // per_block * block_bytes, "quantized_data has the wrong length"
    b = raw.reshape(-1, block_bytes)
    decoder = {2: _decode_q2_k, 3: _decode_q3_k, 4: lambda x: _decode_q4_q5_k(x, False),
               5: lambda x: _decode_q4_q5_k(x, True), 6: _decode_q6_k, 8: _decode_q8_0}[bits]
    y = decoder(b).reshape(-1) if b.size else np.zeros(0, F32)
    if rotation == "hadamard256":
        y = inverse_rotation(y).reshape(-1)
    else:
        assert rotation == "none"
    return y[:numel].astype(F32).reshape([int(d) for d in shape])
