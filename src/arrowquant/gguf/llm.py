"""Hugging Face causal language models of the llama family (Llama, Mistral, Qwen2, Qwen3, Phi-3) ->
GGUF files that llama.cpp runs.

What llama.cpp needs beyond the tensors, written here from its own converter's conventions
(convert_hf_to_gguf.py, gguf-py's constants): GGUF tensor names (``blk.N.attn_q.weight``, ...),
for the ``llama`` architecture the query and key projections permuted for its rotary embedding
layout (``qwen2``, ``qwen3`` and ``phi3`` use the Hugging Face layout as it is), the hyper-parameters under
``<arch>.*``, and the tokenizer (vocabulary, token types, merges or scores, special token ids)
under ``tokenizer.ggml.*``. Per-tensor types follow llama-quantize's rules for the LLM tensors
(output, attn_v, ffn_down). Rules and limits: docs/gguf.md, "Language models".
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, ParameterError
from ..paths import path_inside
from ..safetensors_io import load_json
from .container import ARRAY, FLOAT32, INT32, STRING, UINT32, Value
from . import sentencepiece as spm
from .policy import Decision, TypePolicy
# GGUF's token types are SentencePiece's piece types, same numbers.
from .sentencepiece import CONTROL, NORMAL, UNUSED, USER_DEFINED, read_sentencepiece_model
from .types import gguf_type

# config.json "architectures" -> the GGUF architecture that holds them. Qwen2 is Llama's layout with
# biases on the query, key and value projections and a rotary embedding (NEOX style) that llama.cpp
# applies to the Hugging Face layout directly; Qwen3 drops the biases and normalises each head's
# query and key (RMS norms of head_dim weights).
# Phi-3 fuses the query, key and value projections (attn_qkv) and the gate and up projections
# (ffn_up, which llama.cpp splits itself). Qwen2-VL / Qwen2.5-VL (Qwen-Image's text encoder) are
# Qwen2 text models with a multimodal rope whose sections llama.cpp's qwen2vl reads from the
# metadata; their vision tower goes to llama.cpp's separate mmproj file, not this one.
LLM_ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
                     "Qwen3ForCausalLM": "qwen3", "Phi3ForCausalLM": "phi3",
                     "Qwen2VLForConditionalGeneration": "qwen2vl", "Qwen2_5_VLForConditionalGeneration": "qwen2vl"}
# Architectures whose query and key rows llama.cpp wants regrouped for its (GPT-J style) rope.
PERMUTED_ROPE = {"llama"}

# HF tensor name -> (GGUF name, which projection to permute for llama.cpp's rope, or None).
# (Vision-language checkpoints may put the text model under model.language_model.)
_LAYER = r"^model\.(?:language_model\.)?layers\.(\d+)\."
TENSOR_NAMES: list[tuple[re.Pattern, str, str | None]] = [
    (re.compile(r"^model\.(?:language_model\.)?embed_tokens\.weight$"), "token_embd.weight", None),
    (re.compile(r"^model\.(?:language_model\.)?norm\.weight$"), "output_norm.weight", None),
    (re.compile(r"^lm_head\.weight$"), "output.weight", None),
    (re.compile(_LAYER + r"input_layernorm\.weight$"), "blk.{}.attn_norm.weight", None),
    (re.compile(_LAYER + r"self_attn\.q_proj\.weight$"), "blk.{}.attn_q.weight", "q"),
    (re.compile(_LAYER + r"self_attn\.k_proj\.weight$"), "blk.{}.attn_k.weight", "k"),
    (re.compile(_LAYER + r"self_attn\.v_proj\.weight$"), "blk.{}.attn_v.weight", None),
    (re.compile(_LAYER + r"self_attn\.q_proj\.bias$"), "blk.{}.attn_q.bias", "q"),
    (re.compile(_LAYER + r"self_attn\.k_proj\.bias$"), "blk.{}.attn_k.bias", "k"),
    (re.compile(_LAYER + r"self_attn\.v_proj\.bias$"), "blk.{}.attn_v.bias", None),
    (re.compile(_LAYER + r"self_attn\.qkv_proj\.weight$"), "blk.{}.attn_qkv.weight", None),
    (re.compile(_LAYER + r"mlp\.gate_up_proj\.weight$"), "blk.{}.ffn_up.weight", None),
    (re.compile(_LAYER + r"self_attn\.q_norm\.weight$"), "blk.{}.attn_q_norm.weight", None),
    (re.compile(_LAYER + r"self_attn\.k_norm\.weight$"), "blk.{}.attn_k_norm.weight", None),
    (re.compile(_LAYER + r"self_attn\.o_proj\.weight$"), "blk.{}.attn_output.weight", None),
    (re.compile(_LAYER + r"post_attention_layernorm\.weight$"), "blk.{}.ffn_norm.weight", None),
    (re.compile(_LAYER + r"mlp\.gate_proj\.weight$"), "blk.{}.ffn_gate.weight", None),
    (re.compile(_LAYER + r"mlp\.up_proj\.weight$"), "blk.{}.ffn_up.weight", None),
    (re.compile(_LAYER + r"mlp\.down_proj\.weight$"), "blk.{}.ffn_down.weight", None),
]
# Tensors llama.cpp recomputes itself, and a vision-language model's vision tower (llama.cpp's mmproj).
SKIPPED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")
VISION_TOWER = re.compile(r"^(?:model\.)?visual\.")
ROPE_FREQS = "rope_freqs.weight"


def mrope_sections(scaling: dict, head_dim: int, where: Path) -> list[int]:
    """Qwen2-VL's rope sections (temporal, height, width: rotary pairs each), padded to the four
    llama.cpp's qwen2vl reads, as its converter writes them; they must cover head_dim / 2 pairs."""
    sections = scaling.get("mrope_section")
    if not isinstance(sections, list) or not 1 <= len(sections) <= 4 or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= head_dim for s in sections):
        raise FileFormatError(f"{where}: a Qwen2-VL model needs rope mrope_section, up to 4 counts; found "
                              f"{str(sections)[:60]!r}")
    if sum(sections) != head_dim // 2:
        raise FileFormatError(f"{where}: mrope_section {sections} covers {sum(sections)} rotary pairs; the heads "
                              f"have {head_dim // 2}")
    return sections + [0] * (4 - len(sections))


def llama3_rope_factors(scaling: dict, base: float, head_dim: int, where: Path) -> np.ndarray:
    """Llama 3.1's rope scaling as the per-frequency factors llama.cpp reads from rope_freqs (what
    its converter computes): 1 for wavelengths under original_context / high_freq_factor, `factor`
    above original_context / low_freq_factor, a smooth blend between."""
    factor = config_float(scaling, "factor", where, 8.0)
    low = config_float(scaling, "low_freq_factor", where, 1.0)
    high = config_float(scaling, "high_freq_factor", where, 4.0)
    old_context = config_int(scaling, "original_max_position_embeddings", where, default=8192, limit=1 << 31)
    if not (factor > 0 and 0 < low < high):
        raise FileFormatError(f"{where}: llama3 rope scaling needs factor > 0 and 0 < low_freq_factor < "
                              f"high_freq_factor; got {factor}, {low}, {high}")
    freqs = (1.0 / (np.float32(base) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))))
    factors = []
    for freq in freqs.astype(np.float32):
        wavelen = np.float32(2 * math.pi) / freq
        if wavelen < old_context / high:
            factors.append(1.0)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, np.float32)



def llm_config(folder: Path) -> dict | None:
    """The model's config.json if ``folder`` holds a llama-family causal LM, else None."""
    config_path = folder / "config.json"
    if not folder.is_dir() or not config_path.is_file():
        return None
    config = load_json(path_inside(folder, "config.json", f"{folder}: model config"), "model config")
    if not isinstance(config, dict):
        return None
    architectures = config.get("architectures") or []
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str) \
            and architectures[0] in LLM_ARCHITECTURES:
        return config
    return None


# The largest value any size in config.json may take (2^24: wider than any model's hidden size or
# vocabulary); the tensors bound them further (LlmModel.expected_shape).
MAX_CONFIG_SIZE = 1 << 24


def config_int(config: dict, key: str, where: Path, default: Any = None, limit: int = MAX_CONFIG_SIZE) -> int:
    """A positive integer of config.json (``default`` when absent or null), else one FileFormatError."""
    value = config.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
        raise FileFormatError(f"{where}: {key!r} must be a positive integer up to {limit}; found {str(value)[:40]!r}")
    return value


def config_float(config: dict, key: str, where: Path, default: float, low: float = 0.0, high: float = math.inf) -> float:
    """A finite number of config.json in (low, high) (``default`` when absent or null), else one FileFormatError."""
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
        raise FileFormatError(f"{where}: {key!r} must be a number in ({low}, {high}); found {str(value)[:40]!r}")
    return float(value)


class LlmModel:
    """One llama-family model: its hyper-parameters and how its tensors map to GGUF."""

    def __init__(self, folder: Path, config: dict) -> None:
        self.arch = LLM_ARCHITECTURES[config["architectures"][0]]
        if isinstance(config.get("text_config"), dict):  # a vision-language model: its text model's settings
            config = {**config, **config["text_config"], "architectures": config["architectures"]}
        self.folder, self.config = folder, config

        where = folder / "config.json"
        self.n_embd, self.n_layer = config_int(config, "hidden_size", where), config_int(config, "num_hidden_layers", where)
        self.n_head, self.n_ff = config_int(config, "num_attention_heads", where), config_int(config, "intermediate_size", where)
        self.n_ctx = config_int(config, "max_position_embeddings", where, limit=1 << 31)
        self.n_head_kv = config_int(config, "num_key_value_heads", where, default=self.n_head)
        if self.n_head % self.n_head_kv:
            raise FileFormatError(f"{where}: {self.n_head} attention heads do not share {self.n_head_kv} key/value "
                                  "heads evenly")
        self.head_dim = config_int(config, "head_dim", where, default=max(self.n_embd // self.n_head, 1))
        self.vocab_size = config_int(config, "vocab_size", where)
        # transformers 5 keeps the rope settings in "rope_parameters", older versions at the top level
        # and in "rope_scaling".
        rope = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else {}
        self.rope_theta = config_float(config, "rope_theta", where, config_float(rope, "rope_theta", where, 10000.0))
        partial = config_float(config, "partial_rotary_factor", where,
                               config_float(rope, "partial_rotary_factor", where, 1.0, high=1.0 + 1e-9), high=1.0 + 1e-9)
        self.rope_dims = int(partial * self.head_dim)
        self.rms_norm_eps = config_float(config, "rms_norm_eps", where, 1e-6, high=1.0)
        scaling = config.get("rope_scaling") if isinstance(config.get("rope_scaling"), dict) else rope
        kind = scaling.get("rope_type") or scaling.get("type") or "default"
        if not isinstance(kind, str):
            raise FileFormatError(f"{where}: rope scaling type {str(kind)[:40]!r} is not a name")
        self.rope_freqs: np.ndarray | None = None
        self.rope_sections: list[int] | None = None
        if self.arch == "qwen2vl":
            self.rope_sections = mrope_sections(scaling, self.head_dim, where)
        if kind == "llama3" and self.arch == "llama":
            self.rope_freqs = llama3_rope_factors(scaling, self.rope_theta, self.head_dim, where)
        elif kind == "mrope" and self.arch == "qwen2vl":
            pass
        elif kind != "default":
            # llama.cpp needs other tensors or keys for these (LongRoPE factors, YaRN settings) that
            # arrowquant does not write yet: the model would compute positions differently.
            raise ParameterError(f"{folder / 'config.json'}: rope scaling {kind!r} is not supported yet (llama3 "
                                 "is); llama.cpp would run the model with different positions")

    def extra_tensors(self) -> dict[str, np.ndarray]:
        """Tensors llama.cpp needs that the checkpoint does not hold: Llama 3.1's rope_freqs."""
        return {} if self.rope_freqs is None else {ROPE_FREQS: self.rope_freqs}

    def gguf_name(self, name: str) -> tuple[str, str | None] | None:
        """(GGUF name, projection to permute) of a checkpoint tensor; None for tensors llama.cpp
        does not load. An unknown name is an error naming it."""
        if SKIPPED.search(name) or VISION_TOWER.match(name):
            return None
        if name == ROPE_FREQS and self.rope_freqs is not None:
            return ROPE_FREQS, None
        for pattern, target, permute in TENSOR_NAMES:
            m = pattern.match(name)
            if m:
                if m.groups() and int(m.group(1)) >= self.n_layer:
                    raise FileFormatError(f"{self.folder}: tensor {name!r} is past the {self.n_layer} layers "
                                          "config.json gives")
                return target.format(*m.groups()), permute if self.arch in PERMUTED_ROPE else None
        raise ParameterError(f"{self.folder}: tensor {name!r} has no GGUF name in the {self.arch} architecture "
                             f"(arrowquant converts llama-family models: {', '.join(LLM_ARCHITECTURES)})")

    def expected_shape(self, gguf_name: str) -> tuple[int, ...] | None:
        """The checkpoint shape config.json implies for a tensor (None: not checked): what llama.cpp
        will require of the file, checked before anything is written."""
        d, q, kv, ff = self.n_embd, self.n_head * self.head_dim, self.n_head_kv * self.head_dim, self.n_ff
        part = gguf_name.split(".", 2)[-1] if gguf_name.startswith("blk.") else gguf_name
        return {"token_embd.weight": (self.vocab_size, d), "output.weight": (self.vocab_size, d),
                "output_norm.weight": (d,), "attn_norm.weight": (d,), "ffn_norm.weight": (d,),
                "attn_q.weight": (q, d), "attn_k.weight": (kv, d), "attn_v.weight": (kv, d),
                "attn_q.bias": (q,), "attn_k.bias": (kv,), "attn_v.bias": (kv,), "attn_output.weight": (d, q),
                "attn_qkv.weight": (q + 2 * kv, d), "attn_q_norm.weight": (self.head_dim,),
                "attn_k_norm.weight": (self.head_dim,), "ffn_gate.weight": (ff, d), "ffn_down.weight": (d, ff),
                "ffn_up.weight": (2 * ff if self.arch == "phi3" else ff, d)}.get(part)

    def heads_of(self, permute: str | None) -> int | None:
        return None if permute is None else self.n_head if permute == "q" else self.n_head_kv

    def metadata(self) -> dict[str, Any]:
        a, c = self.arch, self.config
        out: dict[str, Any] = {
            f"{a}.context_length": Value(UINT32, self.n_ctx),
            f"{a}.embedding_length": Value(UINT32, self.n_embd),
            f"{a}.block_count": Value(UINT32, self.n_layer),
            f"{a}.feed_forward_length": Value(UINT32, self.n_ff),
            f"{a}.rope.dimension_count": Value(UINT32, self.rope_dims),
            f"{a}.attention.head_count": Value(UINT32, self.n_head),
            f"{a}.attention.head_count_kv": Value(UINT32, self.n_head_kv),
            f"{a}.attention.layer_norm_rms_epsilon": Value(FLOAT32, self.rms_norm_eps),
            f"{a}.rope.freq_base": Value(FLOAT32, self.rope_theta),
            f"{a}.vocab_size": Value(UINT32, self.vocab_size),
        }
        if c.get("head_dim"):
            out[f"{a}.attention.key_length"] = Value(UINT32, self.head_dim)
            out[f"{a}.attention.value_length"] = Value(UINT32, self.head_dim)
        if self.rope_sections is not None:
            out[f"{a}.rope.dimension_sections"] = Value(ARRAY, self.rope_sections, INT32)
        if a == "phi3":  # as llama.cpp's converter writes them (0: no sliding window)
            original = c.get("original_max_position_embeddings") or self.n_ctx
            out["phi3.rope.scaling.original_context_length"] = Value(UINT32, int(original))
            out["phi3.attention.sliding_window"] = Value(UINT32, int(c.get("sliding_window") or 0))
        return out


def permute_for_rope(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """HF's rotary layout (halves) -> llama.cpp's (interleaved pairs), as convert_hf_to_gguf.py:
    rows regrouped per head from (2, head_dim / 2) to (head_dim / 2, 2)."""
    rows = weight.shape[0]
    if rows % (2 * n_heads):
        raise FileFormatError(f"a projection of {rows} rows cannot be split into {n_heads} heads of even size")
    return np.ascontiguousarray(weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
                                .swapaxes(1, 2).reshape(weight.shape))


# The pre-tokenizers llama.cpp knows, by the splitting tokenizer.json describes: GPT-2's own regex
# (ByteLevel with use_regex) and Llama 3's and Qwen2's (a Split with one of these regexes, then
# ByteLevel without one; Qwen2's takes digits one at a time).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_PRE_TOKENIZERS = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}


def pre_tokenizer_name(tok: dict, path: Path) -> str:
    """llama.cpp's name for the text splitting tokenizer.json does before BPE; anything else is
    refused, since llama.cpp would split text differently and silently tokenize otherwise. An NFC
    normalizer (Qwen2's) is accepted: llama.cpp does not normalize, which changes nothing for text
    already in NFC, as nearly all text is (docs/gguf.md)."""
    pre, normalizer = tok.get("pre_tokenizer"), tok.get("normalizer")
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    steps = [s for s in steps or [] if isinstance(s, dict)]
    kinds = [s.get("type") for s in steps]
    if normalizer is None or (isinstance(normalizer, dict) and normalizer.get("type") == "NFC"):
        if kinds == ["ByteLevel"] and steps[0].get("use_regex", True) and not steps[0].get("add_prefix_space"):
            return "gpt-2"
        if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
            pattern = steps[0].get("pattern")
            regex = pattern.get("Regex") if isinstance(pattern, dict) else None
            name = SPLIT_PRE_TOKENIZERS.get(regex) if isinstance(regex, str) else None
            if name is not None:
                return name
    raise ParameterError(f"{path}: its pre-tokenizer ({json.dumps(pre)[:200]}) or normalizer "
                         f"({json.dumps(normalizer)[:80]}) is not one arrowquant maps to llama.cpp (GPT-2's "
                         "byte-level regex, Llama 3's or Qwen2's split; no normalizer or NFC); llama.cpp would "
                         "tokenize text differently")


def tokenizer_metadata(folder: Path, model: LlmModel) -> dict[str, Any]:
    """tokenizer.ggml.*: from tokenizer.model when the folder has one (a SentencePiece BPE model,
    llama.cpp's "llama" tokenizer: Llama 2, Mistral, TinyLlama), as llama.cpp's converter prefers
    it; otherwise from tokenizer.json (a byte-level BPE tokenizer, llama.cpp's "gpt2" model)."""
    spm_path = path_inside(folder, "tokenizer.model", f"{folder}: tokenizer")
    json_path = path_inside(folder, "tokenizer.json", f"{folder}: tokenizer")
    unreadable = None
    if spm_path.is_file():
        try:
            sp = read_sentencepiece_model(spm_path, model.vocab_size)
        except FileFormatError as e:
            # Not a SentencePiece model (some byte-level BPE models ship a tiktoken file under that
            # name): tokenizer.json decides, and says why tokenizer.model was not used if it needs it.
            if not json_path.is_file():
                raise
            unreadable = str(e)
        else:
            out, size = sentencepiece_metadata(folder, spm_path, sp, model)
            return out | special_token_metadata(folder, model, size)
    out, size = byte_level_bpe_metadata(folder, json_path, model, unreadable)
    return out | special_token_metadata(folder, model, size)


def check_vocab_fits(path: Path, count: int, model: LlmModel) -> None:
    if count > model.vocab_size:
        raise FileFormatError(f"{path}: {count} tokens, but the model's vocab_size is {model.vocab_size} (its "
                              "embedding has a row per token): not the tokenizer of this model")


def checked_added_token(where: Path, token_id: Any, added: Any) -> tuple[int, str, bool]:
    """(id, content, special) of one added token (an id given as a decimal string too), checked."""
    if isinstance(token_id, str) and token_id.isascii() and token_id.isdigit():  # "²" is a digit to isdigit()
        token_id = int(token_id)
    if not (isinstance(token_id, int) and not isinstance(token_id, bool) and token_id >= 0
            and isinstance(added, dict) and isinstance(added.get("content"), str)):
        raise FileFormatError(f"{where}: added token {str(token_id)[:20]!r} is not a non-negative id with a content "
                              "string")
    return token_id, added["content"], bool(added.get("special"))


def json_added_tokens(tok: Any, path: Path) -> list[tuple[int, str, bool]]:
    """tokenizer.json's added tokens, each (id, content, special), checked."""
    listed = tok.get("added_tokens") if isinstance(tok, dict) else None
    if listed is None:
        return []
    if not isinstance(listed, list):
        raise FileFormatError(f"{path}: 'added_tokens' must be a list of objects")
    return [checked_added_token(path, a.get("id") if isinstance(a, dict) else None, a) for a in listed]


def byte_level_bpe_metadata(folder: Path, path: Path, model: LlmModel,
                            unreadable_model: str | None = None) -> tuple[dict[str, Any], int]:
    if not path.is_file():
        raise ParameterError(f"{folder}: no tokenizer.json or tokenizer.model; llama.cpp needs the tokenizer inside "
                             "the GGUF file (save it with tokenizer.save_pretrained(folder))")
    tok = load_json(path, "tokenizer.json")
    spec = tok.get("model") if isinstance(tok, dict) else None
    if not isinstance(spec, dict) or spec.get("type") != "BPE" or not isinstance(spec.get("vocab"), dict):
        raise ParameterError(f"{path}: tokenizer model {spec.get('type') if isinstance(spec, dict) else None!r} is not "
                             "supported (arrowquant writes byte-level BPE tokenizers, llama.cpp's 'gpt2' model, and "
                             "SentencePiece BPE models from tokenizer.model)")
    if spec.get("byte_fallback"):
        raise ParameterError(f"{path}: a BPE tokenizer with byte fallback is SentencePiece-style (llama.cpp's 'llama' "
                             "model), whose scores only tokenizer.model holds: put the model's tokenizer.model in the "
                             "folder" + (f" (the one there is unreadable: {unreadable_model})" if unreadable_model else ""))
    vocab: dict[str, int] = dict(spec["vocab"])
    types: dict[int, int] = {}
    for i, content, special in json_added_tokens(tok, path):
        vocab[content] = i
        types[i] = CONTROL if special else USER_DEFINED
    for text, i in vocab.items():
        if not isinstance(text, str) or isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise FileFormatError(f"{path}: token {str(text)[:40]!r} has id {str(i)[:20]!r}; expected a text with a "
                                  "non-negative integer id")
    check_vocab_fits(path, max(vocab.values(), default=-1) + 1, model)
    if len(set(vocab.values())) != len(vocab):
        seen: dict[int, str] = {}
        for text, i in vocab.items():
            if i in seen:
                raise FileFormatError(f"{path}: tokens {seen[i][:40]!r} and {text[:40]!r} both have id {i}")
            seen[i] = text
    size = model.vocab_size
    tokens = [f"[PAD{i}]" for i in range(size)]
    token_types = [UNUSED] * size
    for text, i in vocab.items():
        tokens[i], token_types[i] = text, types.get(i, NORMAL)
    merges = spec.get("merges") or []
    if not isinstance(merges, list) or not all(
            isinstance(m, str) or (isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m))
            for m in merges):
        raise FileFormatError(f"{path}: 'merges' must be a list of \"a b\" strings or [a, b] pairs")
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre_tokenizer_name(tok, path),
        "tokenizer.ggml.tokens": Value(ARRAY, tokens, STRING),
        "tokenizer.ggml.token_type": Value(ARRAY, token_types, INT32),
        "tokenizer.ggml.merges": Value(ARRAY, merges, STRING),
    }, size


def sentencepiece_metadata(folder: Path, path: Path, sp: spm.SentencePieceModel,
                           model: LlmModel) -> tuple[dict[str, Any], int]:
    """The pieces, scores and types of tokenizer.model, as llama.cpp's converter writes them
    (_create_vocab_sentencepiece): ids past the pieces padded as unused, tokens added in
    tokenizer_config.json marked control (special) or user-defined. Only models llama.cpp
    tokenizes exactly as SentencePiece does are accepted: BPE with byte fallback and no
    normalization beyond writing spaces as U+2581."""
    if sp.model_type != spm.BPE:
        raise ParameterError(f"{path}: a SentencePiece {spm.MODEL_TYPE_NAMES.get(sp.model_type, sp.model_type)} "
                             "model; llama.cpp's 'llama' tokenizer reproduces SentencePiece BPE models only")
    if not sp.byte_fallback:
        raise ParameterError(f"{path}: a SentencePiece model without byte fallback; llama.cpp's 'llama' tokenizer "
                             "spells unknown characters as byte tokens, which this model lacks")
    if sp.normalizer_name != "identity" or sp.has_precompiled_charsmap or sp.remove_extra_whitespaces \
            or not sp.escape_whitespaces:
        raise ParameterError(f"{path}: its normalizer ({sp.normalizer_name or 'unnamed'}"
                             f"{', removes extra whitespace' if sp.remove_extra_whitespaces else ''}) changes text "
                             "before tokenizing, which llama.cpp does not: it would tokenize differently")
    check_vocab_fits(path, len(sp.pieces), model)
    size = model.vocab_size
    tokens = [f"[PAD{i}]" for i in range(size)]
    scores = [-10000.0] * size
    token_types = [UNUSED] * size
    for i, (piece, score, kind) in enumerate(sp.pieces):
        tokens[i], scores[i], token_types[i] = piece, score, kind
    settings_path = folder / "tokenizer_config.json"
    decoder = tokenizer_settings(folder).get("added_tokens_decoder")
    added_tokens = [(settings_path, *checked_added_token(settings_path, key, added))
                    for key, added in (decoder.items() if isinstance(decoder, dict) else ())]
    # tokenizer.json's added tokens too (Phi-3's chat tokens live there), as llama.cpp's converter
    # reads them for Phi-3; transformers 5 no longer writes added_tokens_decoder.
    json_path = path_inside(folder, "tokenizer.json", f"{folder}: tokenizer")
    if json_path.is_file():
        added_tokens += [(json_path, *a) for a in json_added_tokens(load_json(json_path, "tokenizer.json"), json_path)]
    for where, i, content, special in added_tokens:
        check_vocab_fits(where, i + 1, model)
        if special:
            tokens[i], token_types[i] = content, CONTROL
        else:  # llama.cpp's converter writes user-defined pieces with plain spaces
            tokens[i], token_types[i] = content.replace("\u2581", " "), USER_DEFINED
        scores[i] = -1000.0
    out: dict[str, Any] = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": Value(ARRAY, tokens, STRING),
        "tokenizer.ggml.scores": Value(ARRAY, scores, FLOAT32),
        "tokenizer.ggml.token_type": Value(ARRAY, token_types, INT32),
        "tokenizer.ggml.add_space_prefix": sp.add_dummy_prefix,
    }
    unknown = [i for i, (_, _, kind) in enumerate(sp.pieces) if kind == spm.UNKNOWN]
    if unknown:
        out["tokenizer.ggml.unknown_token_id"] = Value(UINT32, unknown[0])
    return out, size


def tokenizer_settings(folder: Path) -> dict:
    path = path_inside(folder, "tokenizer_config.json", f"{folder}: tokenizer settings")
    settings = load_json(path, "tokenizer_config.json") if path.is_file() else {}
    return settings if isinstance(settings, dict) else {}


def special_token_metadata(folder: Path, model: LlmModel, size: int) -> dict[str, Any]:
    """Special token ids from config.json and whether to add BOS / EOS from tokenizer_config.json."""
    out: dict[str, Any] = {}
    for key, gguf_key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                          ("pad_token_id", "padding_token_id")):
        value = model.config.get(key)
        if isinstance(value, list):  # several end-of-sequence ids: llama.cpp takes one
            value = value[0] if value else None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < size:
            out[f"tokenizer.ggml.{gguf_key}"] = Value(UINT32, value)
    settings = tokenizer_settings(folder)
    for key in ("add_bos_token", "add_eos_token"):
        if isinstance(settings.get(key), bool):
            out[f"tokenizer.ggml.{key}"] = settings[key]
    return out


def use_more_bits(i_layer: int, n_layer: int) -> bool:
    """llama-quantize's choice of the layers whose attn_v / ffn_down get more bits."""
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


# Tensors llama-quantize never quantizes (tensor_allows_quantization in llama-quant.cpp), beyond
# 1-D ones and names not ending in "weight".
_KEPT_AS_IS = ("_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
               "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
               "indexer.q_proj.weight")
_KEPT_EXACT = ("position_embd.weight", "token_types.weight")
_BLOCK_INDEX = re.compile(r"(?:enc\.|dec\.)?blk\.(\d+)\.")


class LlamaQuantizeOptions:
    """llama-quantize's per-tensor options: ``output_tensor_type`` / ``token_embedding_type`` (a
    GGUF type for output.weight / token_embd.weight, taken as it is), ``pure`` (every quantized
    tensor in the mix's base type, no per-tensor rules), ``leave_output_tensor`` (output.weight
    not quantized), ``tensor_types`` ([(regular expression searched in the name, type)], its
    --tensor-type)."""

    def __init__(self, output_tensor_type=None, token_embedding_type=None, pure: bool = False,
                 leave_output_tensor: bool = False, tensor_types=()) -> None:
        self.output_tensor_type, self.token_embedding_type = output_tensor_type, token_embedding_type
        self.pure, self.leave_output_tensor, self.tensor_types = pure, leave_output_tensor, list(tensor_types)
        self.has_imatrix = False  # an importance matrix is given (some of llama-quantize's rules change)
        # --override-kv and the importance matrix's keys, applied to the metadata last (metadata_edits.py)
        self.metadata_edits: list = []
        self.split = None  # a splits.SplitPlan: how to cut the output into shards (None: one file)
        self.prune_layers: list[int] = []  # layers to leave out of a GGUF source (--prune-layers)
        self.dry_run = False  # decide and report sizes, write nothing (--dry-run)

    @classmethod
    def parse(cls, output_tensor_type: Any = None, token_embedding_type: Any = None, pure: Any = False,
              leave_output_tensor: Any = False, tensor_type: Any = None) -> "LlamaQuantizeOptions":
        """Checked options: types by name, ``tensor_type`` as ["REGEX=TYPE", ...]."""
        def one_type(value: Any, what: str):
            if value is None:
                return None
            try:
                return gguf_type(value)
            except KeyError:
                raise ParameterError(f"{what} must be a GGUF type name such as Q6_K or Q8_0; got {value!r}") from None
        for what, flag in (("pure", pure), ("leave_output_tensor", leave_output_tensor)):
            if not isinstance(flag, bool):
                raise ParameterError(f"{what} must be True or False; got {flag!r}")
        patterns = []
        for entry in [tensor_type] if isinstance(tensor_type, str) else (tensor_type or []):
            if not isinstance(entry, str) or "=" not in entry:
                raise ParameterError(f"tensor_type entries are REGEX=TYPE, as llama-quantize's --tensor-type; got {entry!r}")
            pattern, name = entry.rsplit("=", 1)
            try:
                patterns.append((re.compile(pattern), one_type(name, f"tensor_type {entry}")))
            except re.error as e:
                raise ParameterError(f"tensor_type {entry!r}: {pattern!r} is not a regular expression ({e})") from None
        return cls(one_type(output_tensor_type, "output_tensor_type"),
                   one_type(token_embedding_type, "token_embedding_type"), pure, leave_output_tensor, patterns)

    @property
    def given(self) -> bool:
        return bool(self.output_tensor_type or self.token_embedding_type or self.pure or self.leave_output_tensor
                    or self.tensor_types)


class LlmTypePolicy(TypePolicy):
    """TypePolicy with llama-quantize's rules for the LLM tensors (llama_tensor_get_type_impl in
    llama-quant.cpp): output.weight (or token_embd when the output is tied to it) in Q6_K (Q8_0
    when the mix's block does not divide its rows, or for Falcon); attn_v / attn_qkv, ffn_down and
    attn_output raised per mix and layer; llama.cpp's fallback chain for rows a block does not
    divide; the tensors it never quantizes kept as they are."""

    # llama-quant.cpp's tensor_type_fallback: then F16 if the fallback's block does not fit either.
    FALLBACKS = {"Q2_K": ["Q4_0", "F16"], "Q3_K": ["Q4_0", "F16"], "Q4_K": ["Q5_0", "F16"],
                 "Q5_K": ["Q5_1", "F16"], "Q6_K": ["Q8_0", "F16"], "IQ4_XS": ["IQ4_NL", "F16"]}

    def __init__(self, mix: str, overrides, model: LlmModel, has_output: bool,
                 options: LlamaQuantizeOptions | None = None) -> None:
        super().__init__(mix, None, overrides)
        self.model, self.has_output = model, has_output
        self.options = options or LlamaQuantizeOptions()
        self.i_ffn_down = 0
        self.falcon = getattr(model, "arch", None) == "falcon"
        # llama-quantize --keep-split takes the tensors in the source's file order, not its
        # loader's layer-by-layer order, and its layer counts follow that order (see _layer).
        self.layers_in_file_order = False
        # llama-quantize's attn_v rules count the attn_v tensors present (fewer after --prune-layers)
        self.n_attention_wv = model.n_layer

    def decide(self, name: str, shape: tuple[int, ...], source_dtype: str) -> Decision:
        shape = tuple(shape) or (1,)
        if any(fnmatch.fnmatchcase(name, g) for g, _ in self.overrides):
            return super().decide(name, shape, source_dtype)
        o = self.options
        if self.base.quantized and (not name.endswith("weight") or name in _KEPT_EXACT or len(shape) < 2
                                    or any(k in name for k in _KEPT_AS_IS)
                                    or (o.leave_output_tensor and name == "output.weight")):
            return Decision(self._float_type(source_dtype, True), "llama-quantize keeps it as it is", shape)
        if o.token_embedding_type is not None and name in ("token_embd.weight", "per_layer_token_embd.weight"):
            return Decision(o.token_embedding_type, "token_embedding_type", shape)
        if o.output_tensor_type is not None and name == "output.weight":
            return Decision(o.output_tensor_type, "output_tensor_type", shape)
        if self.base.quantized:
            for pattern, forced in o.tensor_types:
                if pattern.search(name):
                    return self._fit(name, Decision(forced, f"tensor_type {pattern.pattern}", shape))
        return super().decide(name, shape, source_dtype)

    def _layer(self, name: str, counted: int) -> int:
        """The tensor's layer: llama-quantize counts attn_v / ffn_down tensors in its loader's order,
        layer by layer, so its count is the layer index; a checkpoint lists them in any order
        (safetensors sorts blk.10 before blk.2), so the index is read from the name. With
        --keep-split llama-quantize counts in the source's file order instead: then the count,
        whatever layer it names, is what its rules use."""
        if self.layers_in_file_order:
            return counted
        m = _BLOCK_INDEX.match(name)
        return int(m.group(1)) if m else counted

    def _mix_rule(self, name: str):
        mix, base, n = self.mix, self.base, self.model.n_layer
        if self.options.pure:
            return base, "default (pure)"
        if name == "output.weight" or (not self.has_output and name == "token_embd.weight"):
            if self.falcon or self.model.n_embd % base.block_size:
                return gguf_type("Q8_0"), "output matrix (llama.cpp: Q8_0)"
            return gguf_type("Q8_0" if base.name == "Q8_0" else "Q6_K"), "output matrix (llama.cpp rule)"
        if "attn_v.weight" in name or "attn_qkv.weight" in name:  # llama-quantize counts both as attn_v
            i = self._layer(name, self.i_attention_wv)
            self.i_attention_wv += 1
            gqa = self.model.n_head // self.model.n_head_kv
            new = {"Q2_K": "Q4_K" if gqa >= 4 else "Q3_K", "Q3_K_L": "Q5_K"}.get(mix)
            if mix == "Q3_K_M":
                new = "Q5_K" if i < 2 else "Q4_K"
            elif mix in ("IQ4_NL", "IQ4_XS") and gqa >= 4:
                new = "Q5_K"
            elif mix in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, self.n_attention_wv):
                new = "Q6_K"
            elif mix == "Q4_K_S" and i < 4:
                new = "Q5_K"
            return (gguf_type(new), "value projection (llama.cpp rule)") if new else (base, "default")
        if "ffn_down" in name:
            i = self._layer(name, self.i_ffn_down)
            self.i_ffn_down += 1
            new = {"Q2_K": "Q3_K", "Q3_K_L": "Q4_K" if self.falcon else "Q5_K"}.get(mix)
            if mix == "Q3_K_M":
                new = "Q5_K" if i < n // 16 else ("Q4_K" if not self.falcon or use_more_bits(i, n) else "Q3_K")
            elif mix == "Q4_K_M" and self.falcon:
                new = "Q6_K" if i < n // 16 else ("Q5_K" if use_more_bits(i, n) else None)
            elif mix in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n):
                new = "Q6_K"
            elif mix in ("IQ4_NL", "IQ4_XS") and i < n // 8 and not self.options.has_imatrix:
                new = "Q5_K"
            elif mix == "Q4_K_S" and not self.falcon and i < n // 8:
                new = "Q5_K"
            elif mix in ("Q4_0", "Q5_0") and self.options.has_imatrix and i < n // 8:
                new = {"Q4_0": "Q4_1", "Q5_0": "Q5_1"}[mix]  # llama.cpp's guard for the first ffn_down layers
            return (gguf_type(new), "second FFN matrix (llama.cpp rule)") if new else (base, "default")
        if "attn_output.weight" in name:
            new = {"Q3_K_L": "Q4_K"}.get(mix) if self.falcon else \
                {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(mix)
            return (gguf_type(new), "attention output (llama.cpp rule)") if new else (base, "default")
        return base, "default"


def model_name(folder: Path, config: dict) -> str:
    name = config.get("_name_or_path")
    return name if isinstance(name, str) and name else folder.name

