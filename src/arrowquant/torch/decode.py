"""Decoding arrowquant's packed format (docs/format.md) into torch tensors: by the compiled kernels
for CPU tensors (their result becomes the tensor without a copy), by torch operations on any other
device. Both perform the documented float32 operations in the documented order (affine:
x = (q - zero_point) * scale; kquant: the block layouts' products and differences, then the
rotation's butterflies), so they agree bit for bit."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

import threading

from ..tensor import dequantize_tensors, QuantizedTensor


def _geometry(shape: Sequence[int], group_size: int) -> tuple[int, int, int]:
    numel = math.prod(shape)
    rows = shape[0] if len(shape) >= 2 else 1
    cols = numel // rows if rows else 0
    return rows, cols, -(-cols // group_size) if cols else 0


def unpack_codes(packed: torch.Tensor, numel: int, bits: int) -> torch.Tensor:
    """Codes packed least-significant bits first (docs/format.md) -> int32 tensor of numel codes."""
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, device=packed.device, dtype=torch.int32) * bits
    codes = (packed.to(torch.int32).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return codes.reshape(-1)[:numel]


def decode_with_torch(packed: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor,
                      shape: Sequence[int], bits: int, group_size: int) -> torch.Tensor:
    """The decoder in torch operations (any device): float32, in ``shape``."""
    numel = math.prod(shape)
    rows, cols, groups_per_row = _geometry(shape, group_size)
    codes = unpack_codes(packed, numel, bits).to(torch.float32)
    device = packed.device
    group = (torch.arange(rows, device=device).unsqueeze(1) * groups_per_row
             + (torch.arange(cols, device=device) // group_size).unsqueeze(0)).reshape(-1)
    return ((codes - zero_points[group]) * scales[group]).reshape(tuple(shape))


def decode_weight(packed: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor, shape: Sequence[int],
                  bits: int, group_size: int, dtype: torch.dtype | None = None,
                  use_kernels: bool = True, scheme: str = "affine", rotation: str = "none",
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """A packed weight decoded on its own device, in float32 (or ``dtype``). CPU tensors go through
    the compiled kernels unless ``use_kernels`` is False; ``out`` (a contiguous float32 CPU tensor
    of the weight's element count) receives them instead of a new tensor."""
    if packed.device.type == "cpu" and use_kernels:
        tensor = QuantizedTensor(packed.numpy(), scales.numpy(), zero_points.numpy(), tuple(shape), bits, group_size,
                                 False, "F32", scheme, rotation)
        if out is not None:
            dequantize_tensors([tensor], ["weight"], outputs=[out.numpy()])
            weight = out.reshape(tuple(shape))
        else:
            [flat] = dequantize_tensors([tensor], ["weight"])
            weight = torch.from_numpy(flat).reshape(tuple(shape))
    elif scheme == "kquant":
        weight = decode_kquant_with_torch(packed, shape, bits, rotation)
    else:
        weight = decode_with_torch(packed, scales, zero_points, shape, bits, group_size)
    return weight if dtype is None or dtype == torch.float32 else weight.to(dtype)


def numpy_to_torch(array: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """A torch tensor with its own copy of a (possibly read-only, memory-mapped) array."""
    tensor = torch.from_numpy(np.array(array, copy=True))
    return tensor if device is None else tensor.to(device)


# ------------------------------------------------------------------------------------------------
# Format version 2, scheme "kquant" (docs/format.md, "Block layouts" and "Rotation"), in torch ops.

_KQUANT_BLOCK_BYTES = {2: 84, 3: 110, 4: 144, 5: 176, 6: 210, 8: 34}
_ROTATION_SIGN_HEX = "5c0fb783ac8c7a2db8453a87531cedaa185e57da8b34e7e541cf9f209a2c478c"


def _f16(raw: torch.Tensor) -> torch.Tensor:
    """(blocks, 2) little-endian bytes -> (blocks,) float32, exactly."""
    return raw.contiguous().view(torch.float16).reshape(-1).to(torch.float32)


def _i(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.int32)


def _q8_0(b: torch.Tensor) -> torch.Tensor:
    return _f16(b[:, 0:2])[:, None] * b[:, 2:34].contiguous().view(torch.int8).to(torch.float32)


def _two_bit_halves(qs: torch.Tensor) -> torch.Tensor:
    """Q2_K / Q3_K: the 2-bit codes of each block in value order, (blocks, 256), and the sub-block
    of each value is value // 16."""
    blocks = qs.shape[0]
    q = _i(qs).reshape(blocks, 2, 1, 2, 16)  # half h, -, part, l
    shifts = torch.arange(0, 8, 2, device=qs.device, dtype=torch.int32).reshape(1, 1, 4, 1, 1)
    return ((q >> shifts) & 3).reshape(blocks, 256)  # (h, j, part, l) = value order 128h + 32j + 16part + l


def _q2_k(b: torch.Tensor) -> torch.Tensor:
    scales, d, dmin = _i(b[:, 0:16]), _f16(b[:, 80:82]), _f16(b[:, 82:84])
    q = _two_bit_halves(b[:, 16:80]).to(torch.float32)
    dl = (d[:, None] * (scales & 15).to(torch.float32)).repeat_interleave(16, dim=1)
    ml = (dmin[:, None] * (scales >> 4).to(torch.float32)).repeat_interleave(16, dim=1)
    return dl * q - ml


def _q3_k(b: torch.Tensor) -> torch.Tensor:
    hmask, scales, d = _i(b[:, 0:32]), _i(b[:, 96:108]), _f16(b[:, 108:110])
    k = torch.arange(16, device=b.device)
    low4 = torch.where(k < 8, scales[:, k % 8] & 15, scales[:, k % 8] >> 4)
    high2 = (scales[:, 8 + k % 4] >> (2 * (k // 4)).to(torch.int32)) & 3
    c = low4 | (high2 << 4)
    q = _two_bit_halves(b[:, 32:96])
    value = torch.arange(256, device=b.device)
    bit = (4 * (value // 128) + (value % 128) // 32).to(torch.int32)
    high = (hmask[:, value % 32] >> bit) & 1
    code = (q - torch.where(high == 1, 0, 4)).to(torch.float32)
    dl = (d[:, None] * (c - 32).to(torch.float32)).repeat_interleave(16, dim=1)
    return dl * code


def _q4_q5_k(b: torch.Tensor, five: bool) -> torch.Tensor:
    d, dmin, s = _f16(b[:, 0:2]), _f16(b[:, 2:4]), _i(b[:, 4:16])
    k = torch.arange(8, device=b.device)
    low = k < 4
    sc = torch.where(low, s[:, k % 4] & 63, (s[:, (k + 4) % 12] & 15) | ((s[:, (k - 4) % 12] >> 6) << 4))
    m = torch.where(low, s[:, (k + 4) % 12] & 63, (s[:, (k + 4) % 12] >> 4) | ((s[:, k % 12] >> 6) << 4))
    qs = _i(b[:, 48:176] if five else b[:, 16:144]).reshape(-1, 4, 1, 32)
    nibbles = torch.cat([qs & 15, qs >> 4], dim=2).reshape(-1, 256)  # (p, part, l): value 64p + 32part + l
    if five:
        qh = _i(b[:, 16:48])
        value = torch.arange(256, device=b.device)
        nibbles = nibbles + 16 * ((qh[:, value % 32] >> (value // 32).to(torch.int32)) & 1)
    dl = (d[:, None] * sc.to(torch.float32)).repeat_interleave(32, dim=1)
    ml = (dmin[:, None] * m.to(torch.float32)).repeat_interleave(32, dim=1)
    return dl * nibbles.to(torch.float32) - ml


def _q6_k(b: torch.Tensor) -> torch.Tensor:
    ql, qh, d = _i(b[:, 0:128]).reshape(-1, 2, 2, 32), _i(b[:, 128:192]).reshape(-1, 2, 1, 32), _f16(b[:, 208:210])
    scales = b[:, 192:208].contiguous().view(torch.int8).to(torch.float32)  # (blocks, 16)
    low = torch.cat([ql & 15, ql >> 4], dim=2)  # (h, n, l) for n = 0..3: L&15, L'&15, L>>4, L'>>4
    shifts = torch.arange(0, 8, 2, device=b.device, dtype=torch.int32).reshape(1, 1, 4, 1)
    code = ((low | (((qh >> shifts) & 3) << 4)) - 32).to(torch.float32).reshape(-1, 256)
    value = torch.arange(256, device=b.device)
    scale_index = 8 * (value // 128) + (value % 32) // 16 + 2 * ((value % 128) // 32)
    return (d[:, None] * scales[:, scale_index]) * code


def _inverse_rotation(y: torch.Tensor) -> torch.Tensor:
    """x = s * (H y) / 16 per block of 256, stages h = 1, 2, ..., 128 in float32."""
    z = y.reshape(-1, 256)
    h = 1
    while h < 256:
        pairs = z.reshape(-1, 256 // (2 * h), 2, h)
        a, b = pairs[:, :, 0, :], pairs[:, :, 1, :]
        z = torch.stack([a + b, a - b], dim=2).reshape(-1, 256)
        h *= 2
    raw = torch.tensor(list(bytes.fromhex(_ROTATION_SIGN_HEX)), dtype=torch.int32, device=y.device)
    bits = (raw.repeat_interleave(8) >> torch.arange(8, device=y.device, dtype=torch.int32).repeat(32)) & 1
    return z * torch.where(bits == 1, -0.0625, 0.0625).to(torch.float32)


def decode_kquant_with_torch(packed: torch.Tensor, shape: Sequence[int], bits: int, rotation: str) -> torch.Tensor:
    """The kquant decoder in torch operations (any device): float32, in ``shape``."""
    numel = math.prod(shape)
    block_bytes = _KQUANT_BLOCK_BYTES[bits]
    blocks = packed.reshape(-1, block_bytes)
    decoder = {2: _q2_k, 3: _q3_k, 4: lambda b: _q4_q5_k(b, False), 5: lambda b: _q4_q5_k(b, True), 6: _q6_k,
               8: _q8_0}[bits]
    values = decoder(blocks).reshape(-1) if blocks.numel() else torch.zeros(0, device=packed.device)
    if rotation == "hadamard256":
        values = _inverse_rotation(values).reshape(-1)
    return values[:numel].reshape(tuple(shape))


# ------------------------------------------------------------------------------------------------
# One scratch buffer per thread for forward passes that need no gradient: each layer's weight is
# decoded into it and used at once, so a forward pass allocates (and the OS zero-fills) nothing
# per layer. It grows to the largest layer's element count and is kept for the thread's life.

_scratch = threading.local()


def scratch_float32(numel: int) -> torch.Tensor:
    """A contiguous float32 CPU tensor of ``numel`` elements over this thread's scratch buffer:
    valid until the next call on this thread."""
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < numel:
        buffer = torch.empty(max(numel, 1), dtype=torch.float32)
        _scratch.buffer = buffer
    return buffer[:numel]


def release_scratch() -> None:
    """Frees this thread's decode buffer (the next forward pass allocates a new one)."""
    _scratch.buffer = None
