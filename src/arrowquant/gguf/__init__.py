"""GGUF output that runtimes load: diffusers (``from_single_file`` + ``GGUFQuantizationConfig``),
ComfyUI-GGUF, stable-diffusion.cpp and llama.cpp read ggml's block formats, which arrowquant
writes byte for byte as ggml's reference quantizer does.

    report = arrowquant.gguf.convert("flux-dev", "flux-dev-gguf", type="Q4_K_M")
    with arrowquant.gguf.open("model.gguf") as f:
        w = f.dequantize(f.names[0])

docs/gguf.md describes the mixes, the per-tensor rules and how to load the result.
"""

from .container import GgufFile
from .model_file import GgufModel, open_model as open  # noqa: A004 - mirrors arrowquant.open
from .convert import convert
from .types import GGUF_TYPES, MIXES, gguf_type

__all__ = ["convert", "open", "GgufFile", "GgufModel", "GGUF_TYPES", "MIXES", "gguf_type"]
