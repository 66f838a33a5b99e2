"""Which GGUF type each tensor gets: the architecture (detected from tensor names as ComfyUI-GGUF
does), the mix (Q4_K_M, Q8_0, ...) and the per-tensor rules the community uses for diffusion
models (ComfyUI-GGUF's tools/convert.py and its llama.cpp patch), written down in docs/gguf.md.

The policy only decides; it never touches tensor data.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any

from ..architectures import Architecture
from ..errors import ParameterError
from ..validation import closest
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


def check_mix(mix: Any) -> str:
    """A mix name (any case, llama.cpp's aliases such as Q4_K) or llama-quantize's numeric id
    (15 or "15" for Q4_K_M: its llama_ftype) -> the mix's name."""
    if isinstance(mix, int) and not isinstance(mix, bool) or isinstance(mix, str) and mix.strip().isdigit():
        by_id = {ftype: name for name, (ftype, *_) in MIXES.items()}
        if int(mix) in by_id:
            return by_id[int(mix)]
    key = MIX_ALIASES.get(str(mix).upper(), str(mix).upper()) if isinstance(mix, str) else None
    if key not in MIXES:
        near = closest(mix, list(MIXES))
        hint = f" (did you mean {near}?)" if near else ""
        raise ParameterError(f"type must be one of {', '.join(MIXES)}; got {mix!r}{hint}")
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


def is_layer_weight(name: str, shape: tuple[int, ...]) -> bool:
    """Whether a tensor is the weight of a Linear or Embedding (2-D) or a Conv2d (4-D), the only
    multi-dimensional tensors runtimes decode from a quantized or BF16 type: ComfyUI-GGUF's GGMLOps
    decode on the fly only for those layers (and norms, 1-D), and its loader reshapes only F32 / F16
    tensors, so a bare parameter (SD3's `pos_embed`, Wan's `modulation`, aura's `register_tokens`)
    or a Conv3d / Conv1d weight in any other type reaches torch as raw bytes of the wrong shape."""
    return name.endswith(".weight") and len(shape) in (2, 4)


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

    def _runtime_float(self, source_dtype: str) -> GgufType:
        """What a tensor stored outside a layer's weights is written as: a type torch takes as it is
        (ComfyUI-GGUF reshapes and hands over only F32 and F16): F16 from F16 sources, else F32
        (lossless from BF16; these tensors are small)."""
        return gguf_type("F16" if source_dtype == "F16" else "F32")

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
        if self.arch is not None and not is_layer_weight(name, orig_shape or shape):
            return Decision(self._runtime_float(source_dtype), "not a Linear / Conv2d / Embedding weight (runtimes "
                            "read it only as F32 / F16)", shape, orig_shape)
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

    # ComfyUI-GGUF's llama.cpp patch (diffusion models): k-quants -> Q5_0 -> Q8_0 -> F16.
    FALLBACKS = {"Q6_K": ["Q8_0", "F16"], "Q8_0": ["F16"], "IQ4_XS": ["IQ4_NL", "Q8_0", "F16"], "IQ4_NL": ["F16"]}

    def _fit(self, name: str, d: Decision) -> Decision:
        """A row length the type's block does not divide falls back, as llama.cpp does:
        k-quants -> Q5_0 (Q6_K -> Q8_0, IQ4_XS -> IQ4_NL) -> Q8_0 -> F16; never silently (the
        report lists it)."""
        row = d.shape[-1]
        if row % d.type.block_size == 0:
            return d
        chain = self.FALLBACKS.get(d.type.name, ["Q5_0", "Q8_0", "F16"])
        for candidate in map(gguf_type, chain):
            if row % candidate.block_size == 0:
                return Decision(candidate, f"{d.reason}; rows of {row} are not a multiple of {d.type.name}'s block of "
                                f"{d.type.block_size}", d.shape, d.orig_shape, fallback_from=d.type)
        raise AssertionError("F16 takes any row")  # pragma: no cover
