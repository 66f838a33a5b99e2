"""T5 / UMT5 text encoders (Flux's and SD3's T5-XXL, Wan's UMT5-XXL) as llama.cpp's ``t5encoder``
GGUF, the layout convert_hf_to_gguf.py writes and ComfyUI-GGUF's text-encoder loader and
transformers (``gguf_file=``) read: the encoder's tensors under llama.cpp's names, its
hyper-parameters, and the SentencePiece unigram vocabulary (``tokenizer.ggml.model`` "t5", which
ComfyUI-GGUF rebuilds UMT5's tokenizer from). A T5ForConditionalGeneration checkpoint gives its
encoder; the decoder's tensors are left out (listed in the report).

The model object here has the shape of llm.LlmModel (names, hyper-parameters, tokenizer), so the
language-model GGUF sink in convert.py writes it; types follow llama-quantize's rules, with the
relative-position bias left unquantized as llama-quantize leaves it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import FileFormatError, ParameterError
from ..paths import path_inside
from ..safetensors_io import load_json
from . import sentencepiece as spm
from .container import ARRAY, FLOAT32, INT32, STRING, UINT8, UINT32, Value
from .llm import LlmTypePolicy, checked_added_token, tokenizer_settings
from .policy import Decision
from .sentencepiece import CONTROL, UNUSED, USER_DEFINED, read_sentencepiece_model

# Hugging Face class -> whether it is UMT5 (per-layer relative attention biases; transformers tells
# the two apart by "umt5" in general.name).
T5_ARCHITECTURES = {"T5EncoderModel": False, "T5ForConditionalGeneration": False, "T5Model": False,
                    "UMT5EncoderModel": True, "UMT5ForConditionalGeneration": True, "UMT5Model": True}

_BLOCK = r"^encoder\.block\.(\d+)\."
TENSOR_NAMES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^(?:shared|encoder\.embed_tokens)\.weight$"), "token_embd.weight"),
    (re.compile(r"^encoder\.final_layer_norm\.weight$"), "enc.output_norm.weight"),
    (re.compile(_BLOCK + r"layer\.0\.SelfAttention\.q\.weight$"), "enc.blk.{}.attn_q.weight"),
    (re.compile(_BLOCK + r"layer\.0\.SelfAttention\.k\.weight$"), "enc.blk.{}.attn_k.weight"),
    (re.compile(_BLOCK + r"layer\.0\.SelfAttention\.v\.weight$"), "enc.blk.{}.attn_v.weight"),
    (re.compile(_BLOCK + r"layer\.0\.SelfAttention\.o\.weight$"), "enc.blk.{}.attn_o.weight"),
    (re.compile(_BLOCK + r"layer\.0\.SelfAttention\.relative_attention_bias\.weight$"), "enc.blk.{}.attn_rel_b.weight"),
    (re.compile(_BLOCK + r"layer\.0\.layer_norm\.weight$"), "enc.blk.{}.attn_norm.weight"),
    (re.compile(_BLOCK + r"layer\.1\.DenseReluDense\.wi\.weight$"), "enc.blk.{}.ffn_up.weight"),
    (re.compile(_BLOCK + r"layer\.1\.DenseReluDense\.wi_0\.weight$"), "enc.blk.{}.ffn_gate.weight"),
    (re.compile(_BLOCK + r"layer\.1\.DenseReluDense\.wi_1\.weight$"), "enc.blk.{}.ffn_up.weight"),
    (re.compile(_BLOCK + r"layer\.1\.DenseReluDense\.wo\.weight$"), "enc.blk.{}.ffn_down.weight"),
    (re.compile(_BLOCK + r"layer\.1\.layer_norm\.weight$"), "enc.blk.{}.ffn_norm.weight"),
]
# Not part of a text encoder: the decoder and the language-model head.
NOT_ENCODER = re.compile(r"^(decoder\.|lm_head\.)")


def t5_config(folder: Path) -> dict | None:
    """The model's config.json if ``folder`` holds a T5 / UMT5 model, else None."""
    config_path = folder / "config.json"
    if not folder.is_dir() or not config_path.is_file():
        return None
    config = load_json(path_inside(folder, "config.json", f"{folder}: model config"), "model config")
    if not isinstance(config, dict):
        return None
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str) \
            and architectures[0] in T5_ARCHITECTURES:
        return config
    return None


class T5EncoderModel:
    """A T5 / UMT5 encoder: its hyper-parameters (checked) and how its tensors map to GGUF."""

    arch = "t5encoder"

    def __init__(self, folder: Path, config: dict) -> None:
        self.folder, self.config = folder, config
        where = folder / "config.json"
        self.umt5 = T5_ARCHITECTURES[config["architectures"][0]]

        def need(key: str, default: int | None = None, limit: int = 1 << 24) -> int:
            value = config.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
                raise FileFormatError(f"{where}: {key!r} must be a positive integer up to {limit}; found {value!r}")
            return value

        self.n_embd, self.n_layer, self.n_head = need("d_model"), need("num_layers", limit=4096), need("num_heads")
        self.n_head_kv = self.n_head
        self.n_ff, self.head_dim, self.vocab_size = need("d_ff"), need("d_kv"), need("vocab_size")
        self.n_ctx = need("n_positions", 512)
        self.buckets = need("relative_attention_num_buckets", 32, limit=1 << 16)
        eps = config.get("layer_norm_epsilon", 1e-6)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise FileFormatError(f"{where}: 'layer_norm_epsilon' must be a number in (0, 1); found {eps!r}")
        self.eps = float(eps)
        # llama.cpp's t5encoder runs a gated FFN with GELU (T5 v1.1, Flan-T5, UMT5) and a plain one
        # with ReLU (the original T5): any other activation would compute something else.
        act = config.get("feed_forward_proj", "relu")
        if act not in ("relu", "gated-gelu"):
            raise ParameterError(f"{where}: feed_forward_proj {str(act)[:40]!r} is not one llama.cpp's t5encoder "
                                 "computes (gated-gelu: T5 v1.1, Flan-T5, UMT5; relu: the original T5)")

    def gguf_name(self, name: str) -> tuple[str, None] | None:
        """(GGUF name, None) of an encoder tensor; None for the decoder's; an unknown name is an
        error naming it."""
        if NOT_ENCODER.match(name):
            return None
        for pattern, target in TENSOR_NAMES:
            m = pattern.match(name)
            if m:
                if m.groups() and int(m.group(1)) >= self.n_layer:
                    raise FileFormatError(f"{self.folder}: tensor {name!r} is past the {self.n_layer} layers config.json "
                                          "gives")
                return target.format(*m.groups()), None
        raise ParameterError(f"{self.folder}: tensor {name!r} has no GGUF name in llama.cpp's t5encoder layout")

    def heads_of(self, permute: None) -> None:  # T5's projections need no rope permutation
        return None

    def expected_shape(self, gguf_name: str) -> tuple[int, ...] | None:
        """The checkpoint shape config.json implies for a tensor (None: not checked)."""
        inner, d, ff = self.n_head * self.head_dim, self.n_embd, self.n_ff
        shapes = {"token_embd.weight": (self.vocab_size, d), "attn_q.weight": (inner, d), "attn_k.weight": (inner, d),
                  "attn_v.weight": (inner, d), "attn_o.weight": (d, inner), "attn_rel_b.weight": (self.buckets, self.n_head),
                  "attn_norm.weight": (d,), "ffn_norm.weight": (d,), "ffn_gate.weight": (ff, d),
                  "ffn_up.weight": (ff, d), "ffn_down.weight": (d, ff), "output_norm.weight": (d,)}
        return shapes.get(gguf_name.split(".", 2)[-1] if gguf_name.startswith("enc.blk.") else
                          gguf_name.removeprefix("enc."))

    def metadata(self) -> dict[str, Any]:
        a = self.arch
        return {
            f"{a}.context_length": Value(UINT32, self.n_ctx),
            f"{a}.embedding_length": Value(UINT32, self.n_embd),
            f"{a}.feed_forward_length": Value(UINT32, self.n_ff),
            f"{a}.block_count": Value(UINT32, self.n_layer),
            f"{a}.attention.head_count": Value(UINT32, self.n_head),
            f"{a}.attention.key_length": Value(UINT32, self.head_dim),
            f"{a}.attention.value_length": Value(UINT32, self.head_dim),
            f"{a}.attention.layer_norm_epsilon": Value(FLOAT32, self.eps),
            f"{a}.attention.layer_norm_rms_epsilon": Value(FLOAT32, self.eps),
            f"{a}.attention.relative_buckets_count": Value(UINT32, self.buckets),
        }

    def name(self) -> str:
        """general.name: the model's own name; UMT5's always says so (transformers loads a
        t5encoder GGUF as UMT5 only when its name contains "umt5")."""
        name = self.config.get("_name_or_path")
        name = name if isinstance(name, str) and name else self.folder.name
        return name if not self.umt5 or "umt5" in name.lower() else f"{name} (umt5)"


class T5TypePolicy(LlmTypePolicy):
    """llama-quantize's rules for the encoder (no output matrix: the token embedding takes its
    rule), with the relative-position bias left unquantized, as llama-quantize leaves it."""

    def decide(self, name: str, shape: tuple[int, ...], source_dtype: str) -> Decision:
        if name.endswith("attn_rel_b.weight") and not any(g for g, _ in self.overrides if g == name):
            return Decision(self._float_type(source_dtype, True), "relative position bias (llama.cpp: unquantized)",
                            tuple(shape))
        return super().decide(name, shape, source_dtype)


def t5_tokenizer_metadata(folder: Path, model: T5EncoderModel) -> dict[str, Any]:
    """tokenizer.ggml.* from spiece.model (SentencePiece unigram), as llama.cpp's converter writes
    a T5 vocabulary: pieces, scores and types, ids past the pieces padded as unused, the added
    tokens of tokenizer_config.json (T5's <extra_id_N>), the normalizer's precompiled character
    map, the special ids, and EOS appended to every input as T5 does."""
    path = path_inside(folder, "spiece.model", f"{folder}: tokenizer")
    if not path.is_file():
        raise ParameterError(f"{folder}: no spiece.model; the t5encoder GGUF carries the SentencePiece vocabulary "
                             "(save it with tokenizer.save_pretrained(folder) from a T5Tokenizer)")
    sp = read_sentencepiece_model(path, model.vocab_size)
    if sp.model_type != spm.UNIGRAM:
        raise ParameterError(f"{path}: a SentencePiece {spm.MODEL_TYPE_NAMES.get(sp.model_type, sp.model_type)} "
                             "model; llama.cpp's t5 tokenizer is unigram")
    size = model.vocab_size
    if len(sp.pieces) > size:
        raise FileFormatError(f"{path}: {len(sp.pieces)} pieces, but the model's vocab_size is {size}: not the "
                              "tokenizer of this model")
    tokens = [f"[PAD{i}]" for i in range(size)]
    scores = [-10000.0] * size
    token_types = [UNUSED] * size
    for i, (piece, score, kind) in enumerate(sp.pieces):
        tokens[i], scores[i], token_types[i] = piece, score, kind
    settings_path = folder / "tokenizer_config.json"
    decoder = tokenizer_settings(folder).get("added_tokens_decoder")
    for key, added in (decoder.items() if isinstance(decoder, dict) else ()):
        i, content, special = checked_added_token(settings_path, key, added)
        if i >= size:
            raise FileFormatError(f"{settings_path}: added token id {i} is past the model's vocab_size {size}")
        if i >= len(sp.pieces):  # T5's <extra_id_N> sentinels follow the pieces
            tokens[i], token_types[i], scores[i] = content, CONTROL if special else USER_DEFINED, -1000.0
    special_ids = {}
    unknown = [i for i, (_, _, kind) in enumerate(sp.pieces) if kind == spm.UNKNOWN]
    if unknown:
        special_ids["tokenizer.ggml.unknown_token_id"] = Value(UINT32, unknown[0])
    for key, gguf_key in (("eos_token_id", "eos_token_id"), ("pad_token_id", "padding_token_id")):
        value = model.config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < size:
            special_ids[f"tokenizer.ggml.{gguf_key}"] = Value(UINT32, value)
    out: dict[str, Any] = {
        "tokenizer.ggml.model": "t5",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": Value(ARRAY, tokens, STRING),
        "tokenizer.ggml.scores": Value(ARRAY, scores, FLOAT32),
        "tokenizer.ggml.token_type": Value(ARRAY, token_types, INT32),
        "tokenizer.ggml.add_space_prefix": sp.add_dummy_prefix,
        "tokenizer.ggml.remove_extra_whitespaces": sp.remove_extra_whitespaces,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.add_eos_token": True,
        **special_ids,
    }
    if sp.precompiled_charsmap:
        out["tokenizer.ggml.precompiled_charsmap"] = Value(ARRAY, sp.precompiled_charsmap, UINT8)
    return out
