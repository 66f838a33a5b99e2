"""Quantized drop-in modules: the packed codes, scales and zero points are buffers (they move with
``.to(device)`` and are saved in ``state_dict``); ``forward`` decodes the weight on the module's
device into the input's dtype and calls the functional op."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .decode import decode_weight, scratch_float32


class QuantizedWeight(nn.Module):
    """The packed weight of one layer (arrowquant format, docs/format.md)."""

    def __init__(self, packed: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor, shape: tuple[int, ...],
                 bit_width: int, group_size: int, source_dtype: str = "F32", scheme: str = "affine",
                 rotation: str = "none") -> None:
        super().__init__()
        self.register_buffer("packed", packed)
        self.register_buffer("scales", scales)
        self.register_buffer("zero_points", zero_points)
        self.shape, self.bit_width, self.group_size, self.source_dtype = tuple(shape), bit_width, group_size, source_dtype
        self.scheme, self.rotation = scheme, rotation  # format v2's kquant: scales and zero_points are empty

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return decode_weight(self.packed, self.scales, self.zero_points, self.shape, self.bit_width, self.group_size,
                             dtype, scheme=self.scheme, rotation=self.rotation)

    def dequantize_for_forward(self, dtype: torch.dtype, needs_grad: bool) -> torch.Tensor:
        """The weight for one forward call: on the CPU, without autograd needing it, decoded into
        the thread's scratch buffer (valid until the next layer decodes; never returned to users)."""
        if needs_grad or self.packed.device.type != "cpu":
            return self.dequantize(dtype)
        out = scratch_float32(math.prod(self.shape))
        weight = decode_weight(self.packed, self.scales, self.zero_points, self.shape, self.bit_width, self.group_size,
                               scheme=self.scheme, rotation=self.rotation, out=out)
        return weight if dtype == torch.float32 else weight.to(dtype)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in (self.packed, self.scales, self.zero_points))

    def extra_repr(self) -> str:
        scheme = f"scheme={self.scheme}, rotation={self.rotation}, " if self.scheme != "affine" else ""
        return (f"shape={list(self.shape)}, {scheme}bits={self.bit_width}, group_size={self.group_size}, "
                f"bytes={self.nbytes:,} (float32: {4 * math.prod(self.shape):,})")


class _DecodedWeightAttribute:
    """``.weight`` for code outside the module that reads it (transformers' CLIP takes
    ``position_embedding.weight.shape``; others read ``.weight.dtype`` or ``.device``): the float
    weight decoded on every access, in the dtype the module's float buffers have (``.to(dtype)``
    moves them). forward never uses it, and it is not in ``state_dict``."""

    @property
    def weight(self) -> torch.Tensor:
        return self.qweight.dequantize(self.qweight.scales.dtype)


class _QuantizedLayer(_DecodedWeightAttribute, nn.Module):
    def __init__(self, weight: QuantizedWeight, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.qweight = weight
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The float weight (float32 unless ``dtype``)."""
        return self.qweight.dequantize(dtype)

    def _weight_and_bias(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = x.dtype if x.is_floating_point() else torch.float32
        bias = self.bias.to(dtype) if self.bias is not None and self.bias.dtype != dtype else self.bias
        # Autograd may keep the weight for the backward pass: then it must be a tensor of its own.
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or self.training)
        return self.qweight.dequantize_for_forward(dtype, needs_grad), bias


class QuantizedLinear(_QuantizedLayer):
    def __init__(self, weight: QuantizedWeight, bias: torch.Tensor | None = None, linear: nn.Module | None = None) -> None:
        super().__init__(weight, bias)
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self._weight_and_bias(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _QuantizedConv(_QuantizedLayer):
    _functional: Any = None

    def __init__(self, weight: QuantizedWeight, bias: torch.Tensor | None, conv: nn.Module) -> None:
        super().__init__(weight, bias)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.padding_mode = conv.padding_mode
        self._reversed_padding = getattr(conv, "_reversed_padding_repeated_twice", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._weight_and_bias(x)
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding, mode=self.padding_mode)
            return type(self)._functional(x, weight, bias, self.stride, 0, self.dilation, self.groups)
        return type(self)._functional(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"weight_shape={list(self.qweight.shape)}, stride={self.stride}, padding={self.padding}, "
                f"bias={self.bias is not None}")


class QuantizedConv1d(_QuantizedConv):
    _functional = staticmethod(F.conv1d)


class QuantizedConv2d(_QuantizedConv):
    _functional = staticmethod(F.conv2d)


class QuantizedEmbedding(_DecodedWeightAttribute, nn.Module):
    """nn.Embedding with a packed table, decoded when looked up (whole table: rows of the packed
    format need not start on a byte)."""

    def __init__(self, weight: QuantizedWeight, bias: None, embedding: nn.Embedding) -> None:
        super().__init__()
        self.qweight = weight
        self.num_embeddings, self.embedding_dim = weight.shape
        self.padding_idx, self.max_norm, self.norm_type = embedding.padding_idx, embedding.max_norm, embedding.norm_type
        self.scale_grad_by_freq, self.sparse = embedding.scale_grad_by_freq, embedding.sparse

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.qweight.dequantize(dtype)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.qweight.dequantize(), self.padding_idx, None, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


# Which quantized module replaces which float module (each takes (weight, bias, original module)).
REPLACEMENTS: dict[type, type] = {nn.Linear: QuantizedLinear, nn.Conv1d: QuantizedConv1d, nn.Conv2d: QuantizedConv2d,
                                  nn.Embedding: QuantizedEmbedding}
