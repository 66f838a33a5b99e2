"""Quantizing a live torch model in place, and saving it as a `.aq` file that load_quantized reads."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..aq_file import AqWriter
from ..checkpoint import _patterns, should_quantize
from ..diffusion import DiffusionQuantConfig, bit_width_rule
from ..safetensors_io import TensorInfo
from ..tensor import QuantizedTensor, quantize_arrays
from ..schemes import DEFAULT_PIPELINE_METHODS, check_bits_for_scheme, check_rotate, check_scheme
from ..validation import check_group_size, check_method, check_mode
from .decode import numpy_to_torch
from .modules import REPLACEMENTS, QuantizedWeight, _QuantizedLayer

_SAFETENSORS_NAME = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                     torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                     torch.bool: "BOOL"}


def _as_numpy(weight: torch.Tensor) -> tuple[np.ndarray, str]:
    """A CPU NumPy view (or copy, for GPU tensors) the kernels read, and its safetensors dtype."""
    w = weight.detach().to("cpu").contiguous()
    if w.dtype == torch.bfloat16:
        return w.view(torch.int16).numpy().view(np.uint16), "BF16"
    if w.dtype in (torch.float32, torch.float16):
        return w.numpy(), _SAFETENSORS_NAME[w.dtype]
    return w.to(torch.float32).numpy(), "F32"


def quantize_model(model: nn.Module, *, bit_width: int = 4, group_size: int = 128, method: str | None = None,
                   include: Any = None, exclude: Any = None, mode: str = "diffusion",
                   num_threads: int | None = None, scheme: str = "affine", rotate: bool = True) -> nn.Module:
    """Quantize ``model``'s Linear / Conv1d / Conv2d weights in place with the kernels and rules of
    the checkpoint pipelines: a weight is quantized when a checkpoint's would be (≥ 2 dimensions and
    1,024 elements, ``include`` / ``exclude`` globs), and ``mode="diffusion"`` keeps sensitive layers
    at 8 bits as quantize_diffusion_model does. Weights may be float32, float16 or bfloat16, on any
    device (the packed buffers stay on it). ``scheme="kquant"`` (bit widths 2-8, ``rotate``) uses
    format version 2 (docs/format.md). Returns the model."""
    scheme, rotate = check_scheme(scheme), check_rotate(rotate)
    method = DEFAULT_PIPELINE_METHODS[scheme] if method is None else method  # as the checkpoint pipelines
    bits, group, method, mode = check_bits_for_scheme(bit_width, scheme), check_group_size(group_size), \
        check_method(method), check_mode(mode)
    include_patterns, exclude_patterns = _patterns(include, "include"), _patterns(exclude, "exclude")
    names = [name for name, _ in model.named_parameters()]
    choose = bit_width_rule(DiffusionQuantConfig(bit_width=bits, group_size=group, method=method, scheme=scheme,
                                                 rotate=rotate), mode, names)
    for module_name, module in list(model.named_modules()):
        replacement = REPLACEMENTS.get(type(module))
        if replacement is None or not module_name:
            continue
        weight_name = f"{module_name}.weight"
        array, dtype = _as_numpy(module.weight)
        info = TensorInfo(weight_name, dtype, tuple(array.shape), 0, array.nbytes)
        if not should_quantize(info, include_patterns, exclude_patterns):
            continue
        layer_bits, _ = (bits, "include") if any(fnmatch.fnmatchcase(weight_name, p) for p in include_patterns) \
            else choose(weight_name, info)
        if layer_bits is None:
            continue
        [(tensor, _, _)] = quantize_arrays([array], [dtype], [f"layer {weight_name!r}"], bit_width=layer_bits,
                                           group_size=group, symmetric=False, method=method, num_threads=num_threads,
                                           scheme=scheme, rotate=rotate)
        device = module.weight.device
        qweight = QuantizedWeight(numpy_to_torch(tensor.quantized_data, device), numpy_to_torch(tensor.scales, device),
                                  numpy_to_torch(tensor.zero_points, device), tuple(tensor.shape), layer_bits,
                                  tensor.group_size, dtype, tensor.scheme, tensor.rotation)
        bias = module.bias.detach() if getattr(module, "bias", None) is not None else None
        new = replacement(qweight, bias, module)
        parent_name, _, child = module_name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def save(model: nn.Module, path: Any, *, overwrite: bool = False) -> None:
    """Write ``model`` as a `.aq` file: quantized layers as stored (``<layer>.weight``), every other
    tensor of its state dict byte for byte. ``load_quantized`` reads it back into the same
    architecture. Atomic; an existing file is replaced only with ``overwrite``."""
    quantized = {name: m.qweight for name, m in model.named_modules() if isinstance(m, _QuantizedLayer)}
    state = model.state_dict()
    skip = {f"{name}.qweight.{buffer}" for name in quantized for buffer in ("packed", "scales", "zero_points")}
    metadata = {"version": __version__, "source_files": [], "settings": {"written_by": "arrowquant.torch.save"},
                "source_metadata": {}}
    version = 2 if any(q.scheme != "affine" for q in quantized.values()) else 1
    with AqWriter(Path(path), metadata, overwrite=overwrite, format_version=version) as writer:
        for name, tensor in state.items():
            if name in skip:
                layer = name.rsplit(".qweight.", 1)[0]
                if name.endswith(".packed"):
                    q = quantized[layer]
                    writer.write_quantized(f"{layer}.weight", QuantizedTensor(
                        q.packed.cpu().numpy(), q.scales.cpu().numpy(), q.zero_points.cpu().numpy(), q.shape,
                        q.bit_width, q.group_size, False, q.source_dtype, q.scheme, q.rotation))
                continue
            if tensor.dtype not in _SAFETENSORS_NAME:
                raise TypeError(f"tensor {name!r}: dtype {tensor.dtype} has no safetensors name")
            data = tensor.detach().cpu().contiguous()
            raw = data.view(torch.int16) if data.dtype == torch.bfloat16 else data
            writer.write_raw(name, raw.numpy().tobytes(), _SAFETENSORS_NAME[tensor.dtype], tuple(tensor.shape))
