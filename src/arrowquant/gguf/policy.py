"""Which GGUF type each tensor gets: the architecture (detected from tensor names as ComfyUI-GGUF
does), the mix (Q4_K_M, Q8_0, ...) and the per-tensor rules the community uses for diffusion
models (ComfyUI-GGUF's tools/convert.py and its llama.cpp patch), written down in docs/gguf.md.

The policy only decides; it never touches tensor data.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any, Sequence

from ..errors import ParameterError
from .types import MIX_ALIASES, MIXES, GgufType, gguf_type

# Tensors of at most this many elements, and 1-D tensors, are not quantized (ComfyUI-GGUF's
# QUANTIZATION_THRESHOLD): their bytes do not matter and their precision does.
SMALL_TENSOR = 1024
# With rearrange_rows (ComfyUI-GGUF's own layout), sd1/sdxl tensors whose last dimension the
# 256-element k-quant block does not divide are stored as (n / 256, 256) rows, their shape kept in
# comfy.gguf.orig_shape.<name>, if at least this many elements (ComfyUI-GGUF's REARRANGE_THRESHOLD).
# Only ComfyUI-GGUF reads that layout (diffusers and stable-diffusion.cpp take the stored shape),
# so it is off by default.
REARRANGE_MIN = 512
MAX_GGUF_DIMS = 4


class Architecture:
    def __init__(self, name: str, detect: Sequence[Sequence[str]], protected: Sequence[str] = (),
                 protected_exact: Sequence[str] = (), hiprec: Sequence[str] = (), shape_fix: bool = False) -> None:
        self.name, self.detect, self.shape_fix = name, detect, shape_fix
        self.protected, self.protected_exact, self.hiprec = tuple(protected), tuple(protected_exact), tuple(hiprec)

    def matches(self, names: set[str]) -> bool:
        return any(all(k in names for k in keys) for keys in self.detect)

    def is_protected(self, name: str) -> bool:
        """Input/output layers and time/text/guidance embeddings: kept in 16/32 bits."""
        return name in self.protected_exact or any(p in name for p in self.protected)


# In ComfyUI-GGUF's detection order. `protected` are the substrings its llama.cpp patch keeps
# unquantized; the diffusers spellings of the same layers are added for diffusers checkpoints.
ARCHITECTURES = [
    Architecture("flux", [("transformer_blocks.0.attn.norm_added_k.weight",), ("double_blocks.0.img_attn.proj.weight",)],
                 protected=("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.",
                            "x_embedder.", "context_embedder.", "time_text_embed.", "norm_out."),
                 protected_exact=("proj_out.weight", "proj_out.bias")),
    Architecture("sd3", [("transformer_blocks.0.attn.add_q_proj.weight",), ("joint_blocks.0.x_block.attn.qkv.weight",)],
                 protected=("final_layer.", "time_text_embed.", "context_embedder.", "t_embedder.", "y_embedder.",
                            "x_embedder.", "pos_embed.", "norm_out."),
                 protected_exact=("proj_out.weight", "pos_embed")),
    Architecture("aura", [("double_layers.3.modX.1.weight",),
                          ("joint_transformer_blocks.3.ff_context.out_projection.weight",)],
                 protected=("t_embedder.", "init_x_linear."),
                 protected_exact=("modF.1.weight", "cond_seq_linear.weight", "final_linear.weight",
                                  "positional_encoding", "register_tokens")),
    Architecture("hidream", [("caption_projection.0.linear.weight",
                              "double_stream_blocks.0.block.ff_i.shared_experts.w3.weight")],
                 protected=("p_embedder.", "t_embedder.", "x_embedder.", "final_layer.", ".ff_i.gate.weight",
                            "caption_projection."),
                 hiprec=(".ff_i.gate.weight", "img_emb.emb_pos")),
    Architecture("cosmos", [("blocks.0.mlp.layer1.weight", "blocks.0.adaln_modulation_cross_attn.1.weight")],
                 protected=("p_embedder.", "t_embedder.", "t_embedding_norm.", "x_embedder.", "pos_embedder.",
                            "final_layer."),
                 hiprec=("pos_embedder",)),
    Architecture("ltxv", [("adaln_single.emb.timestep_embedder.linear_2.weight", "transformer_blocks.27.scale_shift_table",
                           "caption_projection.linear_2.weight")],
                 protected=("adaln_single.", "caption_projection.", "patchify_proj.", "proj_out.", "scale_shift_table"),
                 hiprec=("scale_shift_table",)),
    Architecture("hyvid", [("double_blocks.0.img_attn_proj.weight",
                            "txt_in.individual_token_refiner.blocks.1.self_attn_qkv.weight")],
                 protected=("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.")),
    Architecture("wan", [("blocks.0.self_attn.norm_q.weight", "text_embedding.2.weight", "head.modulation")],
                 protected=("modulation", "patch_embedding.", "text_embedding.", "time_projection.", "time_embedding.",
                            "img_emb.", "head."),
                 hiprec=(".modulation",)),
    Architecture("sdxl", [("down_blocks.0.downsamplers.0.conv.weight", "add_embedding.linear_1.weight"),
                          ("input_blocks.3.0.op.weight", "input_blocks.6.0.op.weight", "output_blocks.2.2.conv.weight",
                           "output_blocks.5.2.conv.weight"),
                          ("label_emb.0.0.weight",)],
                 protected=("class_embedding.", "time_embedding.", "add_embedding.", "time_embed.", "label_emb.",
                            "conv_in.", "conv_out."),
                 protected_exact=("input_blocks.0.0.weight", "out.2.weight"), shape_fix=True),
    Architecture("sd1", [("down_blocks.0.downsamplers.0.conv.weight",),
                         ("input_blocks.3.0.op.weight", "input_blocks.6.0.op.weight", "input_blocks.9.0.op.weight",
                          "output_blocks.2.1.conv.weight", "output_blocks.5.2.conv.weight",
                          "output_blocks.8.2.conv.weight")],
                 protected=("class_embedding.", "time_embedding.", "add_embedding.", "time_embed.", "label_emb.",
                            "conv_in.", "conv_out."),
                 protected_exact=("input_blocks.0.0.weight", "out.2.weight"), shape_fix=True),
    Architecture("lumina2", [("cap_embedder.1.weight", "context_refiner.0.attention.qkv.weight")],
                 protected=("x_embedder.", "t_embedder.", "cap_embedder.", "final_layer.")),
    Architecture("qwen_image", [("txt_norm.weight", "transformer_blocks.0.img_mod.1.weight")],
                 protected=("img_in.", "txt_in.", "txt_norm.", "time_text_embed.", "norm_out.", "proj_out.")),
]
_BY_NAME = {a.name: a for a in ARCHITECTURES}
_PREFIXES = ("model.diffusion_model.",)


def strip_prefix(names: Sequence[str]) -> str:
    """The prefix a single-file checkpoint puts before the model's own names (as ComfyUI strips it)."""
    for prefix in _PREFIXES:
        if any(n.startswith(prefix) for n in names):
            return prefix
    return ""


def detect_architecture(names: Sequence[str]) -> Architecture | None:
    present = set(names)
    for arch in ARCHITECTURES:
        if arch.matches(present):
            return arch
    return None


def architecture(name: str) -> Architecture:
    if name not in _BY_NAME:
        raise ParameterError(f"architecture must be one of {', '.join(_BY_NAME)}; got {name!r}")
    return _BY_NAME[name]


def check_mix(mix: Any) -> str:
    key = MIX_ALIASES.get(str(mix).upper(), str(mix).upper()) if isinstance(mix, str) else None
    if key not in MIXES:
        raise ParameterError(f"type must be one of {', '.join(MIXES)}; got {mix!r}")
    return key


def parse_type_overrides(overrides: Any) -> list[tuple[str, GgufType]]:
    """{glob: type} or ["GLOB=TYPE", ...] -> [(glob, GgufType)], every type checked."""
    if overrides is None:
        return []
    items = overrides.items() if isinstance(overrides, dict) else [
        tuple(o.split("=", 1)) if isinstance(o, str) and "=" in o else (None, o) for o in overrides]
    out = []
    for glob, name in items:
        if not isinstance(glob, str) or not glob:
            raise ParameterError(f"type_for entries are GLOB=TYPE; got {name!r}")
        try:
            out.append((glob, gguf_type(name)))
        except KeyError:
            raise ParameterError(f"type_for {glob}={name}: unknown GGUF type {name!r}") from None
    return out


class Decision:
    __slots__ = ("type", "reason", "shape", "orig_shape", "fallback_from")

    def __init__(self, gguf: GgufType, reason: str, shape: tuple[int, ...], orig_shape: tuple[int, ...] | None = None,
                 fallback_from: GgufType | None = None) -> None:
        self.type, self.reason, self.shape, self.orig_shape, self.fallback_from = gguf, reason, shape, orig_shape, fallback_from


class TypePolicy:
    """Decides each tensor's type and stored shape, in checkpoint order (some rules count: the
    first value projections of Q3_K_M and Q4_K_S get more bits, as in llama.cpp)."""

    def __init__(self, mix: str, arch: Architecture | None, overrides: list[tuple[str, GgufType]],
                 rearrange_rows: bool = False) -> None:
        self.mix, self.arch, self.overrides, self.rearrange_rows = mix, arch, overrides, rearrange_rows
        self.base = gguf_type(MIXES[mix][1])
        self.i_attention_wv = 0

    def _float_type(self, source_dtype: str, keep_f32: bool) -> GgufType:
        """What an unquantized tensor is stored as: F32 for 1-D / small / high-precision tensors of
        F32 or BF16 sources (lossless), else the source's 16-bit type (F32 sources become F16)."""
        if keep_f32 and source_dtype in ("F32", "BF16", "F64"):
            return gguf_type("F32")
        return gguf_type("BF16" if source_dtype == "BF16" else "F16")

    def _mix_rule(self, name: str) -> tuple[GgufType, str]:
        mix, base = self.mix, self.base
        if any(s in name for s in ("attn_v.weight", ".to_v.weight", ".v.weight", ".attn.w1v.weight",
                                   ".attn.w2v.weight", "_attn.v_proj.weight")):
            new = {"Q2_K": "Q3_K", "Q3_K_L": "Q5_K", "Q4_K_M": "Q6_K", "Q5_K_M": "Q6_K"}.get(mix)
            if mix == "Q3_K_M":
                new = "Q5_K" if self.i_attention_wv < 2 else "Q4_K"
            elif mix == "Q4_K_S" and self.i_attention_wv < 4:
                new = "Q5_K"
            self.i_attention_wv += 1
            return (gguf_type(new), "value projection") if new else (base, "default")
        if any(s in name for s in ("attn_qkv.weight", "attn.qkv.weight", "attention.qkv.weight")):
            new = {"Q3_K_M": "Q4_K", "Q3_K_L": "Q4_K", "Q4_K_M": "Q5_K", "Q5_K_M": "Q6_K"}.get(mix)
            return (gguf_type(new), "fused qkv projection") if new else (base, "default")
        if ("ffn_down" in name or ("experts." in name and ".w2.weight" in name)
                or any(s in name for s in (".ffn.2.weight", ".ff.net.2.weight", ".mlp.layer2.weight",
                                           ".adaln_modulation_mlp.2.weight", ".feed_forward.w2.weight"))):
            new = {"Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "Q4_K_S": "Q5_K", "Q4_K_M": "Q6_K", "Q5_K_M": "Q6_K",
                   "Q4_0": "Q4_1", "Q5_0": "Q5_1"}.get(mix)
            return (gguf_type(new), "second FFN matrix") if new else (base, "default")
        return base, "default"

    def decide(self, name: str, shape: tuple[int, ...], source_dtype: str) -> Decision:
        numel = math.prod(shape)
        shape = tuple(shape) or (1,)
        orig_shape = None
        if len(shape) > MAX_GGUF_DIMS:  # ggml holds 4 dimensions; ComfyUI-GGUF restores the rest
            orig_shape, shape = shape, (shape[0], numel // shape[0])
        for glob, forced in self.overrides:
            if fnmatch.fnmatchcase(name, glob):
                return self._fit(name, Decision(forced, f"type_for {glob}", shape, orig_shape))
        if source_dtype not in ("F32", "F16", "BF16", "F64"):
            raise ParameterError(f"tensor {name!r}: {source_dtype} tensors have no GGUF float type here; exclude it "
                                 "or convert it first")
        if len(shape) == 1 or numel <= SMALL_TENSOR:
            return Decision(self._float_type(source_dtype, True), "1-D or small tensor", shape, orig_shape)
        if self.arch is not None and any(h in name for h in self.arch.hiprec):
            return Decision(self._float_type(source_dtype, True), "high-precision tensor", shape, orig_shape)
        if not self.base.quantized:
            return Decision(self.base, "default", shape, orig_shape)
        if self.arch is not None and self.arch.is_protected(name):
            return Decision(self._float_type(source_dtype, False), "input/output layer or embedding", shape, orig_shape)
        chosen, reason = self._mix_rule(name)
        decision = Decision(chosen, reason, shape, orig_shape)
        if (self.rearrange_rows and self.arch is not None and self.arch.shape_fix and orig_shape is None
                and numel >= REARRANGE_MIN
                and numel % 256 == 0 and shape[-1] % 256 != 0):
            decision.orig_shape, decision.shape = shape, (numel // 256, 256)
        return self._fit(name, decision)

    def _fit(self, name: str, d: Decision) -> Decision:
        """A row length the type's block does not divide falls back, as llama.cpp does:
        k-quants -> Q5_0 (Q6_K -> Q8_0, IQ4_XS -> IQ4_NL) -> Q8_0 -> F16; never silently (the
        report lists it)."""
        row = d.shape[-1]
        if row % d.type.block_size == 0:
            return d
        chain = {"Q6_K": ["Q8_0", "F16"], "Q8_0": ["F16"], "IQ4_XS": ["IQ4_NL", "Q8_0", "F16"],
                 "IQ4_NL": ["F16"]}.get(d.type.name, ["Q5_0", "Q8_0", "F16"])
        for candidate in map(gguf_type, chain):
            if row % candidate.block_size == 0:
                return Decision(candidate, f"{d.reason}; rows of {row} are not a multiple of {d.type.name}'s block of "
                                f"{d.type.block_size}", d.shape, d.orig_shape, fallback_from=d.type)
        raise AssertionError("F16 takes any row")  # pragma: no cover
