"""Decoding arrowquant's packed format (docs/format.md) into torch tensors: by the compiled kernels
for CPU tensors (their result becomes the tensor without a copy), by torch operations on any other
device. Both compute x = (q - zero_point) * scale in float32, so they agree bit for bit."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

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
                  use_kernels: bool = True) -> torch.Tensor:
    """A packed weight decoded on its own device, in float32 (or ``dtype``). CPU tensors go through
    the compiled kernels unless ``use_kernels`` is False."""
    if packed.device.type == "cpu" and use_kernels:
        tensor = QuantizedTensor(packed.numpy(), scales.numpy(), zero_points.numpy(), tuple(shape), bits, group_size,
                                 False, "F32")
        [flat] = dequantize_tensors([tensor], ["weight"])
        weight = torch.from_numpy(flat).reshape(tuple(shape))
    else:
        weight = decode_with_torch(packed, scales, zero_points, shape, bits, group_size)
    return weight if dtype is None or dtype == torch.float32 else weight.to(dtype)


def numpy_to_torch(array: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """A torch tensor with its own copy of a (possibly read-only, memory-mapped) array."""
    tensor = torch.from_numpy(np.array(array, copy=True))
    return tensor if device is None else tensor.to(device)
