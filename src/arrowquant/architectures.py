"""The diffusion architectures arrowquant recognises, detected from tensor names as ComfyUI-GGUF
detects them, with the layers each keeps in high precision. Both containers use them: the GGUF
policy keeps these layers in 16/32 bits, `.aq`'s diffusion mode leaves them unquantized.
"""

from __future__ import annotations

from typing import Sequence

from .errors import ParameterError
from .validation import closest


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
    # Before flux: a diffusers-layout QwenImage also has flux's transformer_blocks.0.attn.norm_added_k.
    Architecture("qwen_image", [("txt_norm.weight", "transformer_blocks.0.img_mod.1.weight")],
                 protected=("img_in.", "txt_in.", "txt_norm.", "time_text_embed.", "norm_out.", "proj_out.")),
    # Before flux too: a diffusers-layout HunyuanVideo has flux's norm_added_k as well.
    Architecture("hyvid", [("double_blocks.0.img_attn_proj.weight",
                            "txt_in.individual_token_refiner.blocks.1.self_attn_qkv.weight"),
                           # the diffusers layout (HunyuanVideoTransformer3DModel)
                           ("context_embedder.token_refiner.refiner_blocks.0.attn.to_q.weight", "x_embedder.proj.weight")],
                 protected=("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.",
                            "x_embedder.", "context_embedder.", "time_text_embed.", "norm_out."),
                 protected_exact=("proj_out.weight", "proj_out.bias")),
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
    Architecture("cosmos", [("blocks.0.mlp.layer1.weight", "blocks.0.adaln_modulation_cross_attn.1.weight"),
                            # the diffusers layout (CosmosTransformer3DModel)
                            ("patch_embed.proj.weight", "time_embed.t_embedder.linear_1.weight",
                             "transformer_blocks.0.attn2.to_k.weight")],
                 protected=("p_embedder.", "t_embedder.", "t_embedding_norm.", "x_embedder.", "pos_embedder.",
                            "final_layer.", "patch_embed.", "time_embed.", "learnable_pos_embed.", "norm_out."),
                 protected_exact=("proj_out.weight", "proj_out.bias"),
                 hiprec=("pos_embedder", "learnable_pos_embed")),
    Architecture("ltxv", [("adaln_single.emb.timestep_embedder.linear_2.weight", "transformer_blocks.27.scale_shift_table",
                           "caption_projection.linear_2.weight"),
                          # the diffusers layout (LTXVideoTransformer3DModel)
                          ("time_embed.emb.timestep_embedder.linear_2.weight", "transformer_blocks.0.scale_shift_table",
                           "caption_projection.linear_2.weight")],
                 protected=("adaln_single.", "caption_projection.", "patchify_proj.", "proj_out.", "scale_shift_table",
                            "time_embed."),
                 protected_exact=("proj_in.weight", "proj_in.bias"),
                 hiprec=("scale_shift_table",)),
    Architecture("wan", [("blocks.0.self_attn.norm_q.weight", "text_embedding.2.weight", "head.modulation"),
                         # the diffusers layout (WanTransformer3DModel)
                         ("blocks.0.attn1.norm_q.weight", "condition_embedder.text_embedder.linear_1.weight",
                          "scale_shift_table")],
                 protected=("modulation", "patch_embedding.", "text_embedding.", "time_projection.", "time_embedding.",
                            "img_emb.", "head.", "condition_embedder."),
                 protected_exact=("proj_out.weight", "proj_out.bias"),
                 hiprec=(".modulation", "scale_shift_table")),
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
    Architecture("lumina2", [("cap_embedder.1.weight", "context_refiner.0.attention.qkv.weight"),
                             # the diffusers layout (Lumina2Transformer2DModel)
                             ("time_caption_embed.caption_embedder.1.weight", "context_refiner.0.attn.to_q.weight")],
                 protected=("x_embedder.", "t_embedder.", "cap_embedder.", "final_layer.", "time_caption_embed.",
                            "norm_out.")),
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
        near = closest(name, list(_BY_NAME))
        raise ParameterError(f"architecture must be one of {', '.join(_BY_NAME)}; got {name!r}"
                             + (f" (did you mean {near}?)" if near else ""))
    return _BY_NAME[name]
