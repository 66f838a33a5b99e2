"""The embedded example: a small, deterministic diffusers-style model folder to quantize.

`arrowquant demo` (and `make demo`) generates it, quantizes it with the "local" profile in
diffusion mode, validates it and prints the report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

import numpy as np

# UNet2DConditionModel-style layout, scaled down: block_out_channels (64, 128, 256).
UNET_CHANNELS = (64, 128, 256)
CROSS_ATTENTION_DIM = 256
TIME_EMBED_DIM = 256


def _resnet(prefix: str, cin: int, cout: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{prefix}.norm1.weight", (cin,)
    yield f"{prefix}.norm1.bias", (cin,)
    yield f"{prefix}.conv1.weight", (cout, cin, 3, 3)
    yield f"{prefix}.conv1.bias", (cout,)
    yield f"{prefix}.time_emb_proj.weight", (cout, TIME_EMBED_DIM)
    yield f"{prefix}.time_emb_proj.bias", (cout,)
    yield f"{prefix}.norm2.weight", (cout,)
    yield f"{prefix}.norm2.bias", (cout,)
    yield f"{prefix}.conv2.weight", (cout, cout, 3, 3)
    yield f"{prefix}.conv2.bias", (cout,)
    if cin != cout:
        yield f"{prefix}.conv_shortcut.weight", (cout, cin, 1, 1)
        yield f"{prefix}.conv_shortcut.bias", (cout,)


def _attention(prefix: str, c: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{prefix}.norm.weight", (c,)
    yield f"{prefix}.proj_in.weight", (c, c)
    block = f"{prefix}.transformer_blocks.0"
    for attn, kv in (("attn1", c), ("attn2", CROSS_ATTENTION_DIM)):
        yield f"{block}.{attn}.to_q.weight", (c, c)
        yield f"{block}.{attn}.to_k.weight", (c, kv)
        yield f"{block}.{attn}.to_v.weight", (c, kv)
        yield f"{block}.{attn}.to_out.0.weight", (c, c)
        yield f"{block}.{attn}.to_out.0.bias", (c,)
    for norm in ("norm1", "norm2", "norm3"):
        yield f"{block}.{norm}.weight", (c,)
    yield f"{block}.ff.net.0.proj.weight", (8 * c, c)
    yield f"{block}.ff.net.2.weight", (c, 4 * c)
    yield f"{prefix}.proj_out.weight", (c, c)


def unet_layers() -> Iterator[tuple[str, tuple[int, ...]]]:
    c0 = UNET_CHANNELS[0]
    yield "conv_in.weight", (c0, 4, 3, 3)
    yield "conv_in.bias", (c0,)
    yield "time_embedding.linear_1.weight", (TIME_EMBED_DIM, c0)
    yield "time_embedding.linear_2.weight", (TIME_EMBED_DIM, TIME_EMBED_DIM)
    cin = c0
    for i, c in enumerate(UNET_CHANNELS):
        for j in range(2):
            yield from _resnet(f"down_blocks.{i}.resnets.{j}", cin if j == 0 else c, c)
            if i < 2:
                yield from _attention(f"down_blocks.{i}.attentions.{j}", c)
        if i < len(UNET_CHANNELS) - 1:
            yield f"down_blocks.{i}.downsamplers.0.conv.weight", (c, c, 3, 3)
        cin = c
    top = UNET_CHANNELS[-1]
    yield from _resnet("mid_block.resnets.0", top, top)
    yield from _attention("mid_block.attentions.0", top)
    yield from _resnet("mid_block.resnets.1", top, top)
    reversed_channels = list(reversed(UNET_CHANNELS))
    for i, c in enumerate(reversed_channels):
        for j in range(2):
            yield from _resnet(f"up_blocks.{i}.resnets.{j}", 2 * c if j == 0 else c, c)
            if i > 0:
                yield from _attention(f"up_blocks.{i}.attentions.{j}", c)
        if i < len(reversed_channels) - 1:
            yield f"up_blocks.{i}.upsamplers.0.conv.weight", (reversed_channels[i + 1], c, 3, 3)
    yield "conv_norm_out.weight", (c0,)
    yield "conv_norm_out.bias", (c0,)
    yield "conv_out.weight", (4, c0, 3, 3)
    yield "conv_out.bias", (4,)


def vae_layers() -> Iterator[tuple[str, tuple[int, ...]]]:
    yield "encoder.conv_in.weight", (32, 3, 3, 3)
    yield from _resnet("encoder.down_blocks.0.resnets.0", 32, 64)
    yield "encoder.conv_out.weight", (8, 64, 3, 3)
    yield "quant_conv.weight", (8, 8, 1, 1)
    yield "post_quant_conv.weight", (4, 4, 1, 1)
    yield "decoder.conv_in.weight", (64, 4, 3, 3)
    yield from _resnet("decoder.up_blocks.0.resnets.0", 64, 32)
    yield "decoder.conv_out.weight", (3, 32, 3, 3)


def _weights(layers, rng, dtype) -> dict[str, np.ndarray]:
    out = {}
    for name, shape in layers:
        if len(shape) == 1:
            w = (1.0 if "norm" in name and name.endswith("weight") else 0.0) + 0.02 * rng.standard_normal(shape)
        else:
            fan_in = math.prod(shape[1:])
            w = rng.standard_t(4, size=shape) / math.sqrt(2.0 * fan_in)  # heavy-tailed, trained-like scale
        out[name] = w.astype(dtype)
    return out


def make_demo_model(path: Path, seed: int = 0) -> Path:
    """Writes the demo model folder (about 30 MB) and returns its path."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    path = Path(path)
    (path / "unet").mkdir(parents=True, exist_ok=True)
    (path / "vae").mkdir(exist_ok=True)
    (path / "scheduler").mkdir(exist_ok=True)
    (path / "tokenizer").mkdir(exist_ok=True)
    (path / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "PNDMScheduler"], "tokenizer": ["transformers", "CLIPTokenizer"]}, indent=2))
    (path / "unet" / "config.json").write_text(json.dumps({
        "_class_name": "UNet2DConditionModel", "block_out_channels": list(UNET_CHANNELS),
        "cross_attention_dim": CROSS_ATTENTION_DIM, "in_channels": 4, "out_channels": 4}, indent=2))
    (path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "latent_channels": 4}))
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "PNDMScheduler",
                                                                           "num_train_timesteps": 1000}))
    (path / "tokenizer" / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2}))
    (path / "tokenizer" / "merges.txt").write_text("#version: 0.2\na b\n")
    save_file(_weights(unet_layers(), rng, np.float32), str(path / "unet" / "diffusion_pytorch_model.safetensors"),
              metadata={"format": "pt"})
    save_file(_weights(vae_layers(), rng, np.float32), str(path / "vae" / "diffusion_pytorch_model.safetensors"),
              metadata={"format": "pt"})
    return path
