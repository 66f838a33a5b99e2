"""Diffusion models end to end: configuration, sensitive-layer rules, the model-folder pipeline
and quality validation. The rules are documented in docs/diffusion.md."""

from __future__ import annotations

import math
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .aq_file import AqFile
from .architectures import Architecture, detect_architecture, strip_prefix
from .checkpoint import _patterns, quantize_checkpoint, source_array
from .fp8 import fp8_layout
from .errors import MissingFileError, ParameterError
from .schemes import DEFAULT_PIPELINE_METHODS, DEFAULT_SCHEME, check_bits_for_scheme, check_rotate, check_scheme
from .validation import check_group_size, check_method, check_num_threads
from .markov import DEFAULT_THRESHOLD as DEFAULT_MARKOV_THRESHOLD
from .paths import check_output_apart, path_inside
from .pickle_source import readable
from .pipeline.folders import (component_progress, describe_model, is_weight_path, published_path,
                               write_model_outputs)
from .safetensors_io import TensorInfo, resolve_checkpoint
from .tensor import dequantize_tensors

# "local" uses format v2's kquant scheme: at the same 4.5 bits per weight as affine 4-bit group
# 128, its relative RMSE is 0.071 against 0.097 on MiniLM's weights (bench/bench_format_v2.py),
# with the fast encoder ("rtn"; search gains 2.5% more at 18x the time). edge
# and cloud stay affine: kquant has no setting as small as edge's 2.25 bits per weight, and at
# cloud's size its error is no lower (8.5 vs 9 bits per weight, relative RMSE 0.0053 vs 0.0051).
PROFILES: dict[str, dict[str, Any]] = {
    "edge": {"bit_width": 2, "group_size": 256, "min_accuracy": 0.65},
    "local": {"bit_width": 4, "group_size": 128, "min_accuracy": 0.85, "scheme": "kquant", "method": "rtn"},
    "cloud": {"bit_width": 8, "group_size": 64, "min_accuracy": 0.95},
}
# validate_quality's default pass threshold (weight cosine per layer) by bit width, chosen by
# measuring what a real model computes (docs/diffusion.md, bench/functional_quality.py): MiniLM's
# sentence embeddings are ruined at a weight cosine of 0.93 and usable at 0.99.
DEFAULT_THRESHOLDS = {2: 0.98, 4: 0.98, 8: 0.999}


class DiffusionQuantConfig:
    """Settings of quantize_diffusion_model; validated at construction (errors name the parameter)."""

    FIELDS = ("bit_width", "group_size", "symmetric", "min_accuracy", "fallback", "keep_sensitive",
              "sensitive_bit_width", "include", "exclude", "num_threads", "method", "scheme", "rotate",
              "embedding_bit_width")

    def __init__(self, bit_width: int = 4, group_size: int = 128, symmetric: bool = False,
                 min_accuracy: float | None = None, fallback: bool = True, keep_sensitive: bool = True,
                 sensitive_bit_width: int | None = 8, include: Any = None, exclude: Any = None,
                 num_threads: int | None = None, method: str | None = None, scheme: str = DEFAULT_SCHEME,
                 rotate: bool = True, embedding_bit_width: int | None = None) -> None:
        self.scheme = check_scheme(scheme)
        self.rotate = check_rotate(rotate)
        self.bit_width = check_bits_for_scheme(bit_width, self.scheme)
        self.group_size = check_group_size(group_size)
        for name, value in (("symmetric", symmetric), ("fallback", fallback), ("keep_sensitive", keep_sensitive)):
            if not isinstance(value, bool):
                raise ParameterError(f"{name} must be True or False; got {value!r}")
        self.symmetric, self.fallback, self.keep_sensitive = symmetric, fallback, keep_sensitive
        if min_accuracy is not None and (isinstance(min_accuracy, bool) or not isinstance(min_accuracy, (int, float))
                                         or not 0.0 < min_accuracy <= 1.0):
            raise ParameterError(f"min_accuracy must be a cosine similarity in (0, 1] or None; got {min_accuracy!r}")
        self.min_accuracy = None if min_accuracy is None else float(min_accuracy)
        if sensitive_bit_width is not None:
            check_bits_for_scheme(sensitive_bit_width, self.scheme)
            if sensitive_bit_width < self.bit_width:
                raise ParameterError(f"sensitive_bit_width ({sensitive_bit_width}) must not be below bit_width "
                                     f"({self.bit_width}): sensitive layers keep more precision, not less")
        self.sensitive_bit_width = sensitive_bit_width
        # Token-embedding tables (a row looked up per token, never multiplied whole) take fewer bits
        # for the same model-level error than the matrices that multiply every activation.
        self.embedding_bit_width = (None if embedding_bit_width is None
                                    else check_bits_for_scheme(embedding_bit_width, self.scheme))
        self.include = _patterns(include, "include")
        self.exclude = _patterns(exclude, "exclude")
        self.num_threads = check_num_threads(num_threads)
        # None: search for affine, the fast encoder for kquant (schemes.DEFAULT_PIPELINE_METHODS)
        self.method = DEFAULT_PIPELINE_METHODS[self.scheme] if method is None else check_method(method)

    @classmethod
    def from_profile(cls, name: str, **overrides: Any) -> "DiffusionQuantConfig":
        """edge (2-bit, group 256, min cosine 0.65), local (kquant 4-bit, 4.5 bits per weight, 0.85),
        cloud (8-bit, group 64, 0.95)."""
        if name not in PROFILES:
            raise ParameterError(f"profile must be one of {', '.join(map(repr, PROFILES))}; got {name!r}")
        return cls(**{**PROFILES[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.FIELDS}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DiffusionQuantConfig":
        if not isinstance(values, dict):
            raise ParameterError(f"from_dict takes a dict; got {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.FIELDS))
        if unknown:
            raise ParameterError(f"unknown DiffusionQuantConfig fields {unknown}; known: {list(cls.FIELDS)}")
        return cls(**values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DiffusionQuantConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return "DiffusionQuantConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"


# ----------------------------------------------------------------------------------------------
# Sensitive layers (mode="diffusion")

# Each rule: (reason, regular expression searched in the tensor name).
SENSITIVE_RULES: list[tuple[str, re.Pattern]] = [
    ("time/class embedding", re.compile(
        r"(^|\.)(time_embedding|time_embed|class_embedding|add_embedding|label_emb|time_text_embed|"
        r"timestep_embedder|t_embedder|y_embedder|adaln_single|guidance_embedder)\.")),
    ("input/output layer", re.compile(
        r"(^|\.)(conv_in|conv_out|conv_norm_out|x_embedder|context_embedder|patch_embed|final_layer)\.|"
        r"^(proj_out|norm_out)\.")),
    ("normalization", re.compile(r"(^|\.)[a-z_]*norm[a-z_0-9]*\.")),
    ("positional embedding", re.compile(r"(^|\.)(pos_embed|pos_embedding|position_embedding|rope|freqs)[a-z_]*(\.|$)")),
]
# Block families in network order; the first present block and the last present block are sensitive.
BLOCK_FAMILIES = ["down_blocks", "transformer_blocks", "joint_blocks", "blocks", "up_blocks",
                  "single_transformer_blocks"]
_BLOCK = re.compile(r"^(?:(?:encoder|decoder|model)\.)?(" + "|".join(BLOCK_FAMILIES) + r")\.(\d+)\.")


def edge_blocks(names: list[str]) -> dict[tuple[str, int], str]:
    """{(family, index): "first block" | "last block"} for the network's first and last block,
    found from the tensor names (UNet: down_blocks.0 and the last up_block; Flux: transformer_blocks.0
    and the last single_transformer_block; DiT/SD3: the first and last of their one family)."""
    present: dict[str, set[int]] = {}
    for name in names:
        m = _BLOCK.match(name)
        if m:
            present.setdefault(m.group(1), set()).add(int(m.group(2)))
    ordered = [f for f in BLOCK_FAMILIES if f in present]
    if not ordered:
        return {}
    last = (ordered[-1], max(present[ordered[-1]]))
    return {last: "last block", (ordered[0], min(present[ordered[0]])): "first block"}


def sensitivity(name: str, edges: dict[tuple[str, int], str], arch: Architecture | None = None) -> str | None:
    """Why a tensor is sensitive in a diffusion model, or None. ``arch`` (detected from the names)
    adds the layers the GGUF policy keeps high for that architecture (Flux's img_in / txt_in /
    time_in, Wan's patch_embedding and modulation, ...), so both containers protect the same."""
    for reason, rule in SENSITIVE_RULES:
        if rule.search(name):
            return reason
    if arch is not None:
        stored = name[len(strip_prefix([name])):]
        if arch.is_protected(stored) or any(h in stored for h in arch.hiprec):
            return f"{arch.name} input/output layer, embedding or modulation"
    m = _BLOCK.match(name)
    return edges.get((m.group(1), int(m.group(2)))) if m else None


# Token-embedding tables by their usual names: BERT/CLIP (word_embeddings, token_embedding),
# LLaMA-style (embed_tokens, tok_embeddings, token_embd), GPT-2 (wte), T5 (shared).
TOKEN_EMBEDDING = re.compile(r"(^|\.)(word_embeddings|token_embedding|embed_tokens|tok_embeddings|token_embd|wte|"
                             r"shared)\.weight$")


def bit_width_rule(config: DiffusionQuantConfig, mode: str, names: list[str]
                   ) -> Callable[[str, TensorInfo], tuple[int | None, str]]:
    edges = edge_blocks(names)
    prefix = strip_prefix(names)
    arch = detect_architecture([n[len(prefix):] for n in names if n.startswith(prefix)])

    def choose(name: str, info: TensorInfo) -> tuple[int | None, str]:
        if config.embedding_bit_width is not None and TOKEN_EMBEDDING.search(name):
            return config.embedding_bit_width, "token embedding table (embedding_bit_width)"
        if mode == "diffusion" and config.keep_sensitive:
            why = sensitivity(name, edges, arch)
            if why is not None:
                if config.sensitive_bit_width is None:
                    return None, f"sensitive ({why}): carried through unquantized"
                return max(config.sensitive_bit_width, config.bit_width), f"sensitive ({why})"
        return config.bit_width, "default"

    return choose


def looks_like_diffusion_model(names: list[str]) -> bool:
    """Whether any name is one the diffusion rules know (blocks, embeddings, input/output layers):
    with none of them, mode "diffusion" protects nothing and the model is probably not one."""
    prefix = strip_prefix(names)
    return (bool(edge_blocks(names)) or any(rule.search(n) for n in names for _, rule in SENSITIVE_RULES[:2])
            or detect_architecture([n[len(prefix):] for n in names if n.startswith(prefix)]) is not None)


def _summary(reports: list[dict]) -> dict[str, Any]:
    layers = {k: v for r in reports for k, v in r["layers"].items()}
    cos = [v["cosine"] for v in layers.values()]
    rmse = [v["relative_rmse"] for v in layers.values()]
    before = sum(r["input_bytes"] for r in reports)
    after = sum(r["output_bytes"] for r in reports)
    elements = sum(math.prod(v["shape"]) for v in layers.values())
    return {"bytes_before": before, "bytes_after": after, "compression_ratio": before / after if after else 0.0,
            # stored bits per quantized weight, every parameter included
            "bits_per_weight": 8 * sum(v["bytes_after"] for v in layers.values()) / elements if elements else 0.0,
            "layers_quantized": len(layers), "layers_carried": sum(r["layers_carried"] for r in reports),
            "mean_cosine": float(np.mean(cos)) if cos else 1.0, "min_cosine": min(cos) if cos else 1.0,
            "mean_relative_rmse": float(np.mean(rmse)) if rmse else 0.0, "max_relative_rmse": max(rmse) if rmse else 0.0}


def quantize_diffusion_model(model_path: Any, output_path: Any, config: DiffusionQuantConfig | None = None,
                             progress_callback: Callable[[str, float], Any] | None = None, *, mode: str = "diffusion",
                             overwrite: bool = False, variant: str | None = None,
                             markov_threshold: float = DEFAULT_MARKOV_THRESHOLD, ray: bool = False,
                             allow_pickle: bool = False) -> dict[str, Any]:
    """Quantize a diffusers-style model folder (or one component folder, a safetensors file or a
    sharded index) into ``output_path``, which mirrors the input: a folder per component with its
    .aq file and every non-weight file and folder copied unchanged (symlinks that stay inside the
    model as symlinks). ``variant`` picks weight files such as ``*.fp16.safetensors``; by default
    the files without a variant are used, as diffusers does. The output must lie outside the input;
    an existing one is replaced only with ``overwrite`` (a folder only if arrowquant wrote it).
    With ``ray=True`` every tensor is quantized by a Ray task (arrowquant.ray; a Ray cluster must be
    initialised, and the model must lie on storage every node sees); the output is byte-identical.
    Returns a report (per component and overall: bytes, compression, cosine, relative RMSE, bit
    width per layer, fallbacks, warnings, seconds). PyTorch pickles (``.ckpt``, ``.bin``, ...) are
    read only with ``allow_pickle`` (pickle_source.py)."""
    with readable(Path(model_path), allow_pickle, Path(output_path), GGUF_TO_AQ) as source:
        report = _quantize_model(source, output_path, config, progress_callback, mode, overwrite, variant,
                                 markov_threshold, ray)
    report["model"] = str(model_path)
    return report


GGUF_TO_AQ = ("decode it to safetensors first (arrowquant dequantize MODEL.gguf MODEL.safetensors), or re-quantize "
              "it to GGUF with arrowquant gguf")


def _quantize_model(model_path: Any, output_path: Any, config: DiffusionQuantConfig | None, progress_callback,
                    mode: str, overwrite: bool, variant: str | None, markov_threshold: float, ray: bool) -> dict[str, Any]:
    started = time.perf_counter()
    # The CLI's default too: the local profile's settings without its accuracy target.
    config = config or DiffusionQuantConfig.from_profile("local", min_accuracy=None)
    if not isinstance(config, DiffusionQuantConfig):
        raise ParameterError(f"config must be a DiffusionQuantConfig; got {type(config).__name__}")
    model_path, output_path = Path(model_path), Path(output_path)
    kind, components = describe_model(model_path)
    checkpoints = {name: resolve_checkpoint(path, variant) for name, path in components}
    check_output_apart(output_path, [model_path] + [p for c in checkpoints.values() for p in c.inputs])
    names_of = {name: c.tensor_names() for name, c in checkpoints.items()}
    warnings_out: list[str] = []
    if mode == "diffusion" and not looks_like_diffusion_model([n for ns in names_of.values() for n in ns]):
        warnings_out.append(f"{model_path}: no tensor name looks like a diffusion model's (no UNet/DiT/Flux blocks, "
                            "time embeddings or input/output layers), so mode 'diffusion' protects no layer; "
                            "for other models use mode='base' (--mode base)")
        warnings.warn(warnings_out[-1], UserWarning, stacklevel=2)
    progress_of = component_progress({name: c.nbytes for name, c in checkpoints.items()}, progress_callback)
    executor = None
    if ray:
        from .ray import ray_executor
        executor = ray_executor(config.num_threads or 1)

    def run(name: str, out_file: Path, overwrite_file: bool) -> dict:
        return quantize_checkpoint(
            dict(components)[name], out_file, bit_width=config.bit_width, group_size=config.group_size,
            symmetric=config.symmetric, num_threads=config.num_threads, method=config.method, include=config.include,
            exclude=config.exclude, progress_callback=progress_of(name), mode=mode,
            bit_width_for=bit_width_rule(config, mode, names_of[name]), min_accuracy=config.min_accuracy,
            fallback=config.fallback, overwrite=overwrite_file, variant=variant,
            extra_metadata={"diffusion_config": config.to_dict(), "component": name},
            markov_threshold=markov_threshold, executor=executor, scheme=config.scheme, rotate=config.rotate)

    per_component = write_model_outputs(model_path, output_path, kind, components, checkpoints, ".aq", overwrite, run)
    prefixed = kind == "diffusers"
    markov_raw = {(f"{name}/{k}" if prefixed else k): v for name, r in per_component.items() for k, v in r["_markov"].items()}
    components_out = {}
    for name, r in per_component.items():
        components_out[name or "model"] = {
            "output": published_path(r["output"], output_path), "bytes_before": r["input_bytes"],
            "bytes_after": r["output_bytes"],
            "compression_ratio": r["compression_ratio"], "mean_cosine": r["mean_cosine"], "min_cosine": r["min_cosine"],
            "mean_relative_rmse": r["mean_relative_rmse"], "layers_quantized": r["layers_quantized"],
            "layers_carried": r["layers_carried"], "fallbacks": r["fallbacks"],
            "layers": {k: {"bit_width": v["bit_width"], "reason": v["reason"], "cosine": v["cosine"],
                           "relative_rmse": v["relative_rmse"], "shape": v["shape"]} for k, v in r["layers"].items()},
            "carried": r["carried"], "dropped": r["dropped"]}
    return {"model": str(model_path), "output": str(output_path), "kind": kind, "mode": mode,
            "config": config.to_dict(), "components": components_out,
            "overall": _summary(list(per_component.values())),
            "fallbacks": [f for r in per_component.values() for f in r["fallbacks"]],
            "warnings": warnings_out + [w for r in per_component.values() for w in r["warnings"]],
            "seconds": time.perf_counter() - started, "_markov": markov_raw}


# ----------------------------------------------------------------------------------------------
# Validation

def _pairs(original: Path, quantized: Path) -> list[tuple[str, Path, Path]]:
    """(component, original weights, .aq or .gguf file) pairs for file/file, folder/folder inputs.
    Components a GGUF conversion kept as safetensors (no .aq or .gguf file) are left out."""
    if quantized.is_file():
        if original.is_dir() and (original / "model_index.json").is_file():
            kind, components = describe_model(original)
            # The likely one: the component the file is named after (unet-Q4_K_M.gguf), else the first.
            named = [path for name, path in components if name in quantized.name] or [components[0][1]]
            raise ParameterError(f"{original} is a diffusers folder (components {', '.join(n for n, _ in components)}) "
                                 f"but {quantized} is one file: pass the component folder it was made from (e.g. "
                                 f"{named[0]}), or the whole output folder")
        return [("model", original, quantized)]
    if not quantized.is_dir():
        raise MissingFileError(f"{quantized}: no such .aq / .gguf file or folder")
    kind, components = describe_model(original)
    if kind == "file":
        raise ParameterError(f"{quantized}: is a folder but {original} is a single file; pass the .aq or .gguf file")
    pairs = []
    for name, folder in components:
        target = path_inside(quantized, name, f"{quantized}: component") if name else quantized
        stored = sorted(p for pattern in ("*.aq", "*.gguf") for p in target.glob(pattern) if p.is_file()) \
            if target.is_dir() else []
        if not stored:
            kept = target.is_dir() and any(is_weight_path(p) for p in target.iterdir())
            if kept and any(quantized.rglob("*.gguf")):
                continue  # a GGUF conversion keeps components of no known architecture as safetensors
            raise MissingFileError(f"{target}: no .aq or .gguf file for component '{name or original.name}'")
        pairs.append((name or "model", folder, path_inside(target, stored[0].name, f"{target}: quantized file")))
    return pairs


def threshold_for_bits(bits: float) -> float:
    """validate_quality's default weight-cosine threshold for a tensor stored at ``bits`` per weight."""
    return DEFAULT_THRESHOLDS.get(bits, DEFAULT_THRESHOLDS[8] if bits >= 8 else DEFAULT_THRESHOLDS[4])


class _StoredAq:
    """validate_quality's view of a .aq file: names as in the source, carried tensors as stored."""

    def __init__(self, path: Path, source_names: list[str]) -> None:
        self.file, self.path = AqFile(path), path
        self.names = self.file.layer_names

    def source_name(self, name: str) -> str:
        return name

    def entry(self, name: str) -> tuple[tuple[int, ...], np.ndarray | None, float]:
        """(shape, decoded float64 values or None if stored as it was, bits per weight)."""
        stored = self.file.tensor(name)
        if isinstance(stored, np.ndarray):
            return tuple(stored.shape), None, 0
        decoded = dequantize_tensors([stored], [f"{self.path}: layer {name!r}"])[0].astype(np.float64)
        return tuple(stored.shape), decoded, stored.bit_width

    def stored_array(self, name: str) -> np.ndarray:
        return self.file.tensor(name)

    def close(self) -> None:
        self.file.close()


class _StoredGguf:
    """validate_quality's view of a GGUF file: every tensor decoded (GGUF keeps no tensor as the
    source stored it), names mapped back to the source's: the prefix a diffusion conversion
    stripped, or, for a language model or text encoder folder, llama.cpp's names (blk.N.attn_q ...)
    back to Hugging Face's, the query and key projections compared in llama.cpp's rotary layout."""

    def __init__(self, path: Path, source_names: list[str], source: Path | None = None) -> None:
        from .gguf.llm import LlmModel, llm_config
        from .gguf.model_file import GgufModel
        from .gguf.t5 import T5EncoderModel, t5_config
        self.file, self.path = GgufModel(path), path
        self.prefix = strip_prefix(source_names)
        self.names = self.file.names
        self.mapped: dict[str, tuple[str, int | None]] | None = None  # GGUF name -> (source name, rope heads)
        self.model = None
        if source is not None and source.is_dir():
            config, t5 = llm_config(source), t5_config(source)
            if t5 is not None:
                self.model = T5EncoderModel(source, t5)
            elif config is not None:
                self.model = LlmModel(source, config)
        if self.model is not None:
            self.mapped = {}
            for name in source_names:
                target = self.model.gguf_name(name)
                if target is not None:
                    self.mapped[target[0]] = (name, self.model.heads_of(target[1]))

    def source_name(self, name: str) -> str:
        if self.mapped is not None:
            return self.mapped.get(name, (name, None))[0]
        return self.prefix + name

    def left_out(self, source_name: str) -> bool:
        """Whether the conversion leaves this source tensor out by design (another part of a single
        file; a decoder or rotary buffer llama.cpp does not load)."""
        if self.model is not None:
            return self.model.gguf_name(source_name) is None
        return not source_name.startswith(self.prefix)

    def source_values(self, name: str, values: np.ndarray) -> np.ndarray:
        """The source tensor in the layout the file stores it in."""
        from .gguf.llm import permute_for_rope
        heads = self.mapped.get(name, (None, None))[1] if self.mapped is not None else None
        return values if heads is None else permute_for_rope(values, heads)

    def entry(self, name: str) -> tuple[tuple[int, ...], np.ndarray | None, float]:
        t = self.file.tensors[name]
        return self.file.original_shape(name), self.file.dequantize(name).astype(np.float64).reshape(-1), \
            t.type.bits_per_weight

    def close(self) -> None:
        self.file.close()


def _layer_quality(x: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    d = x - decoded
    xx, yy, xy, dd = float(x @ x), float(decoded @ decoded), float(x @ decoded), float(d @ d)
    cosine = 1.0 if xx == 0 and yy == 0 else (0.0 if xx == 0 or yy == 0 else xy / math.sqrt(xx * yy))
    return {"cosine": cosine, "relative_rmse": math.sqrt(dd / xx) if xx else (0.0 if dd == 0 else math.inf),
            "sqnr_db": 10 * math.log10(xx / dd) if dd > 0 and xx > 0 else math.inf,
            "max_abs_error": float(np.abs(d).max()) if d.size else 0.0}


def validate_quality(original_path: Any, quantized_path: Any, threshold: float | None = None, *,
                     variant: str | None = None,
                     progress_callback: Callable[[str, float], Any] | None = None) -> dict[str, Any]:
    """Compare an original checkpoint (file, index or model folder) with its quantized counterpart
    (.aq or .gguf file, or the folder quantize_diffusion_model or arrowquant.gguf.convert wrote),
    weight by weight: per layer cosine
    similarity, relative RMSE, SQNR (dB) and max absolute error (float64, numpy), overall mean /
    min cosine, and ``passed``: every quantized layer's weight cosine at least ``threshold``
    (default by its bit width, DEFAULT_THRESHOLDS: 0.98 at 2 and 4 bits, 0.999 at 8), carried-through
    layers identical, and no layer
    missing or of another shape on either side.

    This checks the weights, not what the model computes: a model can pass and still produce
    worse outputs, so run the model on real inputs too. ``compression_ratio`` is the source
    tensor bytes over the .aq file bytes, the same quotient quantize reports."""
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0 < threshold <= 1):
        raise ParameterError(f"threshold must be a cosine similarity in (0, 1] or None; got {threshold!r}")
    if progress_callback is not None and not callable(progress_callback):
        raise ParameterError(f"progress_callback must be callable; got {type(progress_callback).__name__}")
    original_path, quantized_path = Path(original_path), Path(quantized_path)
    layers: dict[str, dict[str, Any]] = {}
    problems: list[dict[str, Any]] = []
    skipped: list[str] = []
    bytes_before = bytes_after = 0
    pairs = [(component, source, resolve_checkpoint(source, variant), aq_path)
             for component, source, aq_path in _pairs(original_path, quantized_path)]
    total = sum(c.nbytes for _, _, c, _ in pairs) or 1
    done = 0
    for component, source, checkpoint, aq_path in pairs:
        prefix = "" if component == "model" else f"{component}/"
        originals = {}
        files = checkpoint.open()
        try:
            for f in files:
                for name in f.names():
                    originals[name] = f
                    bytes_before += f.tensors[name].nbytes
            bytes_after += aq_path.stat().st_size
            fp8 = fp8_layout(files)
            view = _StoredGguf(aq_path, list(originals), Path(source)) if aq_path.name.endswith(".gguf") \
                else _StoredAq(aq_path, list(originals))
            try:
                stored_names = {view.source_name(n): n for n in view.names}
                # Left out by design: a single file's other parts (GGUF) and the scales of FP8 weights.
                dropped = [n for n in originals if n not in stored_names and (
                    (isinstance(view, _StoredGguf) and view.left_out(n)) or n in fp8.owner)]
                skipped.extend(prefix + n for n in dropped)
                for name in sorted(set(originals) - set(stored_names) - set(dropped)):
                    problems.append({"layer": prefix + name, "problem": "missing in the quantized model"})
                generated = set(getattr(getattr(view, "model", None), "extra_tensors", dict)())  # rope_freqs
                for name in sorted(set(stored_names) - set(originals) - generated):
                    problems.append({"layer": prefix + name, "problem": "not in the original model"})
                for name, stored_name in stored_names.items():
                    if name not in originals:
                        continue
                    stored_bytes = originals[name].array(name)
                    done += stored_bytes.nbytes
                    shape, decoded, bits = view.entry(stored_name)
                    if shape != tuple(stored_bytes.shape):
                        problems.append({"layer": prefix + name, "problem":
                                         f"shape {list(shape)} differs from the original's {list(stored_bytes.shape)}"})
                        continue
                    if decoded is None:  # carried through: must be identical
                        if view.stored_array(stored_name).tobytes() != stored_bytes.tobytes():
                            problems.append({"layer": prefix + name, "problem": "carried-through tensor differs"})
                        continue
                    values = source_array(originals[name], name, fp8.scales.get(name))  # FP8: widened and scaled
                    if isinstance(view, _StoredGguf):
                        values = view.source_values(stored_name, values)
                    quality = _layer_quality(values.astype(np.float64).reshape(-1), decoded)
                    layer_threshold = threshold if threshold is not None else threshold_for_bits(bits)
                    layers[prefix + name] = {"bit_width": bits, **quality, "threshold": layer_threshold,
                                             "passed": quality["cosine"] >= layer_threshold}
                    if progress_callback is not None:
                        progress_callback(prefix + name, done / total)
            finally:
                view.close()
        finally:
            for f in files:
                f.close()
    cos = [v["cosine"] for v in layers.values()]
    failed = [k for k, v in layers.items() if not v["passed"]]
    return {"original": str(original_path), "quantized": str(quantized_path), "checks": "weight cosine per layer",
            "layers": layers, "mean_cosine": float(np.mean(cos)) if cos else 1.0, "min_cosine": min(cos) if cos else 1.0,
            "compression_ratio": bytes_before / bytes_after if bytes_after else 0.0,
            "bytes_before": bytes_before, "bytes_after": bytes_after,
            "failed_layers": failed, "problems": problems, "skipped": skipped, "passed": not failed and not problems}
