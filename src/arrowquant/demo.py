"""The embedded example: a small, deterministic Stable Diffusion pipeline folder to quantize.

`arrowquant demo` (and `make demo`) generates it, quantizes it with the "local" profile in
diffusion mode, validates it and prints the report. The folder is a real (if tiny and untrained)
diffusers StableDiffusionPipeline: UNet2DConditionModel, AutoencoderKL, a CLIP text encoder and
its tokenizer, each with the exact tensor names and shapes its class builds from the config
written beside it, so diffusers and arrowquant.diffusers load it (tests/test_demo.py checks the
layouts against the classes themselves). Generating it needs only NumPy and safetensors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

import numpy as np

Layout = Iterator[tuple[str, tuple[int, ...]]]

# UNet2DConditionModel, scaled down: three levels, attention in the first two going down and the
# last two going up (the Stable Diffusion 1.x pattern).
UNET_CHANNELS = (64, 128, 256)
UNET_DOWN_BLOCKS = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
UNET_UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
LAYERS_PER_BLOCK = 1
TIME_EMBED_DIM = 4 * UNET_CHANNELS[0]  # diffusers: 4 x the first block's channels
LATENT_CHANNELS = 4
# The CLIP text encoder: its width is the UNet's cross-attention width.
CROSS_ATTENTION_DIM = 256
TEXT_LAYERS, TEXT_HEADS, TEXT_INTERMEDIATE, TEXT_POSITIONS = 2, 4, 512, 77
# AutoencoderKL: two levels (a latent at half the image size), one resnet per level.
VAE_CHANNELS = (32, 64)
NORM_GROUPS = 32


def _linear(prefix: str, cout: int, cin: int, bias: bool = True) -> Layout:
    yield f"{prefix}.weight", (cout, cin)
    if bias:
        yield f"{prefix}.bias", (cout,)


def _conv(prefix: str, cout: int, cin: int, k: int = 3) -> Layout:
    yield f"{prefix}.weight", (cout, cin, k, k)
    yield f"{prefix}.bias", (cout,)


def _norm(prefix: str, c: int) -> Layout:
    yield f"{prefix}.weight", (c,)
    yield f"{prefix}.bias", (c,)


def _resnet(prefix: str, cin: int, cout: int, temb: bool = True) -> Layout:
    yield from _norm(f"{prefix}.norm1", cin)
    yield from _conv(f"{prefix}.conv1", cout, cin)
    if temb:
        yield from _linear(f"{prefix}.time_emb_proj", cout, TIME_EMBED_DIM)
    yield from _norm(f"{prefix}.norm2", cout)
    yield from _conv(f"{prefix}.conv2", cout, cout)
    if cin != cout:
        yield from _conv(f"{prefix}.conv_shortcut", cout, cin, k=1)


def _transformer(prefix: str, c: int) -> Layout:
    """Transformer2DModel with 1x1 convolution projections (use_linear_projection=False)."""
    yield from _norm(f"{prefix}.norm", c)
    yield from _conv(f"{prefix}.proj_in", c, c, k=1)
    block = f"{prefix}.transformer_blocks.0"
    for attn, kv in (("attn1", c), ("attn2", CROSS_ATTENTION_DIM)):
        yield from _linear(f"{block}.{attn}.to_q", c, c, bias=False)
        yield from _linear(f"{block}.{attn}.to_k", c, kv, bias=False)
        yield from _linear(f"{block}.{attn}.to_v", c, kv, bias=False)
        yield from _linear(f"{block}.{attn}.to_out.0", c, c)
    for norm in ("norm1", "norm2", "norm3"):
        yield from _norm(f"{block}.{norm}", c)
    yield from _linear(f"{block}.ff.net.0.proj", 8 * c, c)  # GEGLU: two halves of 4c
    yield from _linear(f"{block}.ff.net.2", c, 4 * c)
    yield from _conv(f"{prefix}.proj_out", c, c, k=1)


def unet_layers() -> Layout:
    """UNet2DConditionModel's state dict for unet_config(), in its order of construction."""
    c0 = UNET_CHANNELS[0]
    yield from _conv("conv_in", c0, LATENT_CHANNELS)
    yield from _linear("time_embedding.linear_1", TIME_EMBED_DIM, c0)
    yield from _linear("time_embedding.linear_2", TIME_EMBED_DIM, TIME_EMBED_DIM)
    cin = c0
    for i, (c, kind) in enumerate(zip(UNET_CHANNELS, UNET_DOWN_BLOCKS)):
        for j in range(LAYERS_PER_BLOCK):
            yield from _resnet(f"down_blocks.{i}.resnets.{j}", cin if j == 0 else c, c)
        if kind.startswith("CrossAttn"):
            for j in range(LAYERS_PER_BLOCK):
                yield from _transformer(f"down_blocks.{i}.attentions.{j}", c)
        if i < len(UNET_CHANNELS) - 1:
            yield from _conv(f"down_blocks.{i}.downsamplers.0.conv", c, c)
        cin = c
    top = UNET_CHANNELS[-1]
    yield from _resnet("mid_block.resnets.0", top, top)
    yield from _transformer("mid_block.attentions.0", top)
    yield from _resnet("mid_block.resnets.1", top, top)
    reverse = list(reversed(UNET_CHANNELS))
    out = reverse[0]
    for i, kind in enumerate(UNET_UP_BLOCKS):
        prev, out, skip_in = out, reverse[i], reverse[min(i + 1, len(reverse) - 1)]
        for j in range(LAYERS_PER_BLOCK + 1):  # each takes one skip connection from the way down
            skip = skip_in if j == LAYERS_PER_BLOCK else out
            yield from _resnet(f"up_blocks.{i}.resnets.{j}", (prev if j == 0 else out) + skip, out)
        if kind.startswith("CrossAttn"):
            for j in range(LAYERS_PER_BLOCK + 1):
                yield from _transformer(f"up_blocks.{i}.attentions.{j}", out)
        if i < len(reverse) - 1:
            yield from _conv(f"up_blocks.{i}.upsamplers.0.conv", out, out)
    yield from _norm("conv_norm_out", c0)
    yield from _conv("conv_out", LATENT_CHANNELS, c0)


def _vae_mid(prefix: str, c: int) -> Layout:
    yield from _resnet(f"{prefix}.resnets.0", c, c, temb=False)
    attention = f"{prefix}.attentions.0"
    yield from _norm(f"{attention}.group_norm", c)
    for proj in ("to_q", "to_k", "to_v", "to_out.0"):
        yield from _linear(f"{attention}.{proj}", c, c)
    yield from _resnet(f"{prefix}.resnets.1", c, c, temb=False)


def vae_layers() -> Layout:
    """AutoencoderKL's state dict for vae_config()."""
    c0, top = VAE_CHANNELS[0], VAE_CHANNELS[-1]
    yield from _conv("encoder.conv_in", c0, 3)
    cin = c0
    for i, c in enumerate(VAE_CHANNELS):
        yield from _resnet(f"encoder.down_blocks.{i}.resnets.0", cin, c, temb=False)
        if i < len(VAE_CHANNELS) - 1:
            yield from _conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", c, c)
        cin = c
    yield from _vae_mid("encoder.mid_block", top)
    yield from _norm("encoder.conv_norm_out", top)
    yield from _conv("encoder.conv_out", 2 * LATENT_CHANNELS, top)
    yield from _conv("decoder.conv_in", top, LATENT_CHANNELS)
    yield from _vae_mid("decoder.mid_block", top)
    reverse = list(reversed(VAE_CHANNELS))
    out = reverse[0]
    for i in range(len(reverse)):
        prev, out = out, reverse[i]
        for j in range(2):
            yield from _resnet(f"decoder.up_blocks.{i}.resnets.{j}", prev if j == 0 else out, out, temb=False)
        if i < len(reverse) - 1:
            yield from _conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", out, out)
    yield from _norm("decoder.conv_norm_out", c0)
    yield from _conv("decoder.conv_out", 3, c0)
    yield from _conv("quant_conv", 2 * LATENT_CHANNELS, 2 * LATENT_CHANNELS, k=1)
    yield from _conv("post_quant_conv", LATENT_CHANNELS, LATENT_CHANNELS, k=1)


def text_encoder_layers(vocab_size: int) -> Layout:
    """transformers' CLIPTextModel's state dict for text_encoder_config()."""
    h = CROSS_ATTENTION_DIM
    yield "text_model.embeddings.token_embedding.weight", (vocab_size, h)
    yield "text_model.embeddings.position_embedding.weight", (TEXT_POSITIONS, h)
    for i in range(TEXT_LAYERS):
        layer = f"text_model.encoder.layers.{i}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            yield from _linear(f"{layer}.self_attn.{proj}", h, h)
        yield from _norm(f"{layer}.layer_norm1", h)
        yield from _linear(f"{layer}.mlp.fc1", TEXT_INTERMEDIATE, h)
        yield from _linear(f"{layer}.mlp.fc2", h, TEXT_INTERMEDIATE)
        yield from _norm(f"{layer}.layer_norm2", h)
    yield from _norm("text_model.final_layer_norm", h)


def _byte_symbols() -> list[str]:
    """The 256 symbols byte-level BPE (GPT-2, CLIP) uses for the bytes 0-255, in its order:
    printable Latin-1 characters stand for themselves, every other byte for a code point
    from 256 up, so no byte becomes whitespace or a control character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def clip_vocabulary() -> dict[str, int]:
    """A complete CLIP tokenizer vocabulary without merges: every byte, alone and word-final
    (``</w>``), then the two special tokens. Any text tokenizes (a byte per token)."""
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def unet_config() -> dict:
    return {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.30.0", "sample_size": 16,
            "in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS, "down_block_types": list(UNET_DOWN_BLOCKS),
            "up_block_types": list(UNET_UP_BLOCKS), "block_out_channels": list(UNET_CHANNELS),
            "layers_per_block": LAYERS_PER_BLOCK, "cross_attention_dim": CROSS_ATTENTION_DIM, "attention_head_dim": 8,
            "norm_num_groups": NORM_GROUPS}


def vae_config() -> dict:
    return {"_class_name": "AutoencoderKL", "_diffusers_version": "0.30.0", "in_channels": 3, "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * len(VAE_CHANNELS),
            "up_block_types": ["UpDecoderBlock2D"] * len(VAE_CHANNELS), "block_out_channels": list(VAE_CHANNELS),
            "layers_per_block": 1, "latent_channels": LATENT_CHANNELS, "norm_num_groups": NORM_GROUPS,
            "sample_size": 32, "scaling_factor": 0.18215}


def text_encoder_config(vocab_size: int) -> dict:
    return {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": vocab_size,
            "hidden_size": CROSS_ATTENTION_DIM, "intermediate_size": TEXT_INTERMEDIATE,
            "num_hidden_layers": TEXT_LAYERS, "num_attention_heads": TEXT_HEADS,
            "max_position_embeddings": TEXT_POSITIONS, "projection_dim": CROSS_ATTENTION_DIM,
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "torch_dtype": "float32",
            "bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 1}


# Written into model_index.json (diffusers ignores keys starting with "_"): `arrowquant demo`
# regenerates a kept demo folder written by another version of this generator.
DEMO_VERSION = 2

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0", "_arrowquant_demo": DEMO_VERSION,
    "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
    "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"]}

SCHEDULER_CONFIG = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.30.0", "num_train_timesteps": 1000,
                    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1}


def _weights(layers, rng, dtype) -> dict[str, np.ndarray]:
    out = {}
    for name, shape in layers:
        if len(shape) == 1:
            norm_scale = name.endswith("weight") and "norm" in name.rsplit(".", 2)[-2]
            w = (1.0 if norm_scale else 0.0) + 0.02 * rng.standard_normal(shape)
        else:
            fan_in = math.prod(shape[1:])
            w = rng.standard_t(4, size=shape) / math.sqrt(2.0 * fan_in)  # heavy-tailed, trained-like scale
        out[name] = w.astype(dtype)
    return out


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def is_current_demo(path: Path) -> bool:
    """Whether ``path`` holds a demo model this version generates (not an older layout)."""
    try:
        return json.loads((Path(path) / "model_index.json").read_text()).get("_arrowquant_demo") == DEMO_VERSION
    except (OSError, ValueError, AttributeError):
        return False


def make_demo_model(path: Path, seed: int = 0) -> Path:
    """Writes the demo pipeline folder (about 55 MB) and returns its path."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    path = Path(path)
    for folder in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (path / folder).mkdir(parents=True, exist_ok=True)
    vocabulary = clip_vocabulary()
    _write_json(path / "model_index.json", MODEL_INDEX)
    _write_json(path / "unet" / "config.json", unet_config())
    _write_json(path / "vae" / "config.json", vae_config())
    _write_json(path / "text_encoder" / "config.json", text_encoder_config(len(vocabulary)))
    _write_json(path / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)
    _write_json(path / "tokenizer" / "vocab.json", vocabulary)
    (path / "tokenizer" / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    _write_json(path / "tokenizer" / "tokenizer_config.json", {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": TEXT_POSITIONS, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
    for folder, file, layers in (
            ("unet", "diffusion_pytorch_model.safetensors", unet_layers()),
            ("vae", "diffusion_pytorch_model.safetensors", vae_layers()),
            ("text_encoder", "model.safetensors", text_encoder_layers(len(vocabulary)))):
        save_file(_weights(layers, rng, np.float32), str(path / folder / file), metadata={"format": "pt"})
    return path
