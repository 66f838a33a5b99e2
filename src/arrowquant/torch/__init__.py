"""Run `.aq` models in PyTorch: the packed weights stay packed in memory and each layer is decoded
right before it is used (``pip install arrowquant[torch]``; ``import arrowquant`` never needs torch).

    model = MyModel(...).to("meta")                      # or accelerate's init_empty_weights()
    arrowquant.torch.load_quantized(model, "model.aq", device="cpu")
    state = arrowquant.torch.load_state_dict("model.aq")  # every tensor, decoded

docs/torch.md describes the modules and the loader.
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without torch
    raise ImportError("arrowquant.torch needs PyTorch: pip install 'arrowquant[torch]'") from error

from .decode import decode_weight
from .loading import load_quantized, load_state_dict
from .modules import QuantizedConv1d, QuantizedConv2d, QuantizedEmbedding, QuantizedLinear, QuantizedWeight
from .quantize import quantize_model, save

__all__ = ["load_state_dict", "load_quantized", "quantize_model", "save", "decode_weight", "QuantizedLinear",
           "QuantizedConv1d", "QuantizedConv2d", "QuantizedEmbedding", "QuantizedWeight"]
