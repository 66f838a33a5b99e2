"""Loading `.aq` files into torch: every tensor as a state dict, or a model whose Linear and Conv
layers become quantized modules, built on the meta device so the float weights never exist."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..aq_file import AqFile
from ..errors import DataError
from .decode import numpy_to_torch
from .modules import REPLACEMENTS, QuantizedWeight

# safetensors dtype names of carried tensors that torch holds under another view.
_TORCH_VIEW = {"BF16": (np.uint16, torch.bfloat16), "F8_E4M3": (np.uint8, getattr(torch, "float8_e4m3fn", None)),
               "F8_E5M2": (np.uint8, getattr(torch, "float8_e5m2", None))}


def _carried_to_torch(array: np.ndarray, source_dtype: str, device: Any) -> torch.Tensor:
    if source_dtype in _TORCH_VIEW and _TORCH_VIEW[source_dtype][1] is not None:
        raw, view = _TORCH_VIEW[source_dtype]
        return numpy_to_torch(array.view(raw), device).view(view)
    return numpy_to_torch(array, device)


def _tensor(f: AqFile, name: str, device: Any, dtype: torch.dtype | None) -> torch.Tensor:
    fields = f._fields(name)
    if fields["group_size"] == 0:
        tensor = _carried_to_torch(f.tensor(name), fields["source_dtype"], device)
    else:  # decoded by the compiled kernels; the array becomes the tensor without a copy
        tensor = torch.from_numpy(f.dequantize(name)).to(device)
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def load_state_dict(path: Any, *, device: Any = "cpu", dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a `.aq` file: quantized ones decoded to float32 (bit-identical to
    ``arrowquant.open(path).dequantize(name)``), carried ones as stored; floating tensors cast to
    ``dtype`` if given."""
    with AqFile(path) as f:
        return {name: _tensor(f, name, device, dtype) for name in f.layer_names}


def _quantized_weight(f: AqFile, name: str, device: Any) -> QuantizedWeight:
    t = f.tensor(name)  # every length and parameter checked against the shape, errors naming file and layer
    return QuantizedWeight(numpy_to_torch(t.quantized_data, device), numpy_to_torch(t.scales, device),
                           numpy_to_torch(t.zero_points, device), t.shape, t.bit_width, t.group_size, t.source_dtype,
                           t.scheme, t.rotation)


def checkpoint_names(model_names: set[str], stored: set[str]) -> dict[str, str]:
    """The file name of each model tensor: its own name, or with one leading part added or removed
    where the file and the model disagree on it as a whole (transformers' CLIPTextModel names its
    tensors ``embeddings...`` while checkpoints on the Hub say ``text_model.embeddings...``: the
    ``base_model_prefix`` convention transformers reconciles when it loads)."""
    same = {n: n for n in model_names}
    if not stored or model_names & stored:
        return same
    heads = {name.split(".", 1)[0] for name in stored}
    if len(heads) == 1 and all("." in name for name in stored):  # the file has a prefix the model lacks
        prefix = next(iter(heads)) + "."
        if any(prefix + n in stored for n in model_names):
            return {n: prefix + n for n in model_names}
    heads = {name.split(".", 1)[0] for name in model_names}
    if len(heads) == 1 and all("." in name for name in model_names):  # the model has a prefix the file lacks
        prefix = next(iter(heads)) + "."
        if any(n.removeprefix(prefix) in stored for n in model_names):
            return {n: n.removeprefix(prefix) for n in model_names}
    return same


def load_quantized(model: nn.Module, path: Any, *, device: Any = None, dtype: torch.dtype | None = None,
                   strict: bool = True) -> nn.Module:
    """Load a `.aq` file into ``model``: each Linear / Conv1d / Conv2d whose weight the file holds
    quantized is replaced by its quantized module (packed buffers, decoded per forward); every other
    tensor is loaded as usual. Works on a model built on the meta device (its float weights are
    never materialised). Shapes are checked; with ``strict`` missing or unexpected keys are an
    error naming them, else a warning. Names may differ from the model's by one leading part the
    whole file adds or lacks (``text_model.`` of CLIP checkpoints). Tensors go to ``device``
    (default: CPU) and floating ones to ``dtype`` (default: the model's dtype for that parameter).
    Returns the model."""
    path = Path(path)
    device = torch.device(device) if device is not None else torch.device("cpu")
    expected = model.state_dict(keep_vars=True)
    with AqFile(path) as f:
        stored = set(f.layer_names)
        in_file = checkpoint_names(set(expected) | {n for n, _ in model.named_buffers()}, stored)
        consumed: set[str] = set()  # model names loaded
        for module_name, module in list(model.named_modules()):
            replacement = REPLACEMENTS.get(type(module))
            weight_name = f"{module_name}.weight" if module_name else "weight"
            weight_key = in_file.get(weight_name, weight_name)
            if replacement is None or weight_key not in stored or not f.is_quantized(weight_key):
                continue
            qweight = _quantized_weight(f, weight_key, device)
            if tuple(module.weight.shape) != qweight.shape:
                raise DataError(f"{path}: tensor {weight_key!r} has shape {list(qweight.shape)} but the model's "
                                f"{type(module).__name__} {module_name!r} expects {list(module.weight.shape)}")
            bias_name = f"{module_name}.bias" if module_name else "bias"
            bias = None
            if getattr(module, "bias", None) is not None and in_file.get(bias_name) in stored:
                bias = _tensor(f, in_file[bias_name], device, dtype or module.bias.dtype)
                consumed.add(bias_name)
            new = replacement(qweight, bias, module)
            consumed.add(weight_name)
            if not module_name:
                raise DataError(f"{path}: the model itself is a {type(module).__name__}; wrap it in a module to load it")
            parent_name, _, child = module_name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        rest = {}
        for name, current in expected.items():
            if name in consumed or in_file[name] not in stored:
                continue
            target = dtype if dtype is not None else (current.dtype if current.is_floating_point() else None)
            tensor = _tensor(f, in_file[name], device, target)
            if tuple(tensor.shape) != tuple(current.shape):
                raise DataError(f"{path}: tensor {in_file[name]!r} has shape {list(tensor.shape)} but the model "
                                f"expects {list(current.shape)}")
            rest[name] = tensor
        model.load_state_dict(rest, strict=False, assign=True)
    missing = sorted(k for k in expected if k not in consumed and k not in rest)
    # A non-persistent buffer (in no state_dict, so in no file) of a model built entirely on the
    # meta device has no value at all; used, it would read uninitialised memory.
    empty = [n for n, b in model.named_buffers() if b.is_meta]
    if empty:
        raise DataError(f"{path}: buffers {empty[:10]} ({len(empty)}) are still on the meta device: they are not "
                        "saved in checkpoints (non-persistent), so build the model with its parameters on the meta "
                        "device but its buffers real, e.g. accelerate.init_empty_weights(include_buffers=False)")
    # Strict about parameters and persistent buffers only: a non-persistent buffer the model
    # computes itself (BERT's embeddings.position_ids) may still be in files saved by older versions.
    non_persistent = {n for n, _ in model.named_buffers()} - set(expected)
    unexpected = sorted(stored - {in_file.get(n, n) for n in set(expected) | consumed | non_persistent})
    if missing or unexpected:
        parts = [f"{what} keys {keys[:10]}{' ...' if len(keys) > 10 else ''} ({len(keys)})"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        message = f"{path}: " + ", ".join(parts)
        if strict:
            raise DataError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    return model
