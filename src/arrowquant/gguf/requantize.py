"""GGUF -> GGUF: a GGUF file (F32 / F16 / BF16, or already quantized) re-encoded with another mix,
as ``llama-quantize`` does it: every metadata entry carried over with its type (the tokenizer, the
hyper-parameters, ``comfy.gguf.orig_shape``), ``general.file_type`` set to the new mix, each
tensor's type chosen by the same rules as a safetensors source (llama-quantize's for language
models, ComfyUI-GGUF's for diffusion architectures), a tensor whose type does not change copied
byte for byte, and a tensor already quantized to another type re-quantized only with
``allow_requantize`` (llama-quantize's ``--allow-requantize``): its error adds to the first one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..architectures import ARCHITECTURES, architecture
from ..errors import FileFormatError, ParameterError
from ..paths import check_file_output, check_output_apart, warn_extension
from ..tensor import bfloat16
from .encode import encode_array, encoder_name, file_report
from .imatrix import importances
from .metadata_edits import edited
from .container import UINT32, TensorSpec, Value
from .model_file import GgufModel
from .splits import planned_paths, planned_sizes, shard_report, write_gguf_shards
from .llm import LlamaQuantizeOptions, LlmTypePolicy
from .policy import TypePolicy
from .t5 import T5TypePolicy
from .types import MIXES

QUANTIZATION_VERSION = 2
_FLOAT_VIEWS = {"F32": np.float32, "F16": np.float16}
KEPT_REASONS = ("1-D or small tensor", "llama-quantize keeps it as it is")
_REPLACED = ("general.file_type", "general.quantization_version", "general.quantized_by")
_BLOCK = re.compile(r"blk\.(\d+)\.")


def pruned_names(f: GgufModel, names: list[str], prune: list[int]) -> dict[str, str]:
    """{output name: source name} without the tensors of the ``prune`` layers, the others
    renumbered from 0 in order (llama-quantize's --prune-layers: blk.3 becomes blk.2 once blk.1 is
    gone). Nothing pruned: every name as it is."""
    if not prune:
        return {n: n for n in names}
    layers = sorted({int(m.group(1)) for m in map(_BLOCK.match, names) if m})
    missing = [p for p in prune if p not in layers]
    if missing:
        raise ParameterError(f"{f.path}: prune_layers {missing} name no layer of this model (it has blocks "
                             f"{layers[0]} to {layers[-1]})" if layers else f"{f.path}: no blk.N layers to prune")
    if len(prune) >= len(layers):
        raise ParameterError(f"{f.path}: prune_layers would leave none of its {len(layers)} layers")
    new_id = {layer: i for i, layer in enumerate(x for x in layers if x not in prune)}
    out = {}
    for name in names:
        m = _BLOCK.match(name)
        if m is None:
            out[name] = name
        elif int(m.group(1)) in new_id:
            out[f"blk.{new_id[int(m.group(1))]}.{name[m.end():]}"] = name
    return out


class GgufModelFacts:
    """What llama-quantize's per-tensor rules need of a language model (layer count, embedding
    width, head counts), read from a GGUF file's ``<arch>.*`` metadata and checked."""

    def __init__(self, f: GgufModel) -> None:
        self.arch = f.architecture
        self.n_layer = self._count(f, "block_count")
        self.n_embd = self._count(f, "embedding_length")
        self.n_head = self._count(f, "attention.head_count", 1)
        self.n_head_kv = self._count(f, "attention.head_count_kv", self.n_head)

    def _count(self, f: GgufModel, key: str, default: int | None = None) -> int:
        value = f.metadata.get(f"{self.arch}.{key}", default)
        if isinstance(value, list) and value:  # per-layer counts (some architectures): the largest
            value = max(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**31:
            raise FileFormatError(f"{f.path}: {self.arch}.{key} is {value!r}; a positive count is needed to choose "
                                  "each tensor's type as llama-quantize does")
        return value


def type_policy(f: GgufModel, mix: str, overrides, options: LlamaQuantizeOptions) -> TypePolicy:
    arch = f.architecture
    if not isinstance(arch, str) or not arch:
        raise FileFormatError(f"{f.path}: no general.architecture; cannot tell which rules choose the tensor types")
    if arch in {a.name for a in ARCHITECTURES}:
        if options.given:
            raise ParameterError(f"{f.path}: a {arch} diffusion model; llama-quantize's tensor options are for "
                                 "language models: use type_for= (--type-for GLOB=TYPE)")
        if options.split is not None and options.split.given:
            raise ParameterError(f"{f.path}: a {arch} diffusion model; ComfyUI-GGUF, diffusers and "
                                 "stable-diffusion.cpp read it from one file, so it is not split")
        if options.prune_layers:
            raise ParameterError(f"{f.path}: a {arch} diffusion model; prune_layers= (--prune-layers) removes "
                                 "a language model's blk.N layers")
        return TypePolicy(mix, architecture(arch), overrides)
    facts = GgufModelFacts(f)
    policy = T5TypePolicy if arch == "t5encoder" else LlmTypePolicy
    return policy(mix, overrides, facts, has_output="output.weight" in f.tensors, options=options)


def requantize(src: Path, out: Path, mix: str, overrides, method: str, allow_requantize: bool, overwrite: bool,
               num_threads: int | None, with_stats: bool,
               progress_callback: Callable[[str, float], Any] | None,
               options: LlamaQuantizeOptions | None = None, imatrix: dict | None = None) -> dict[str, Any]:
    """One GGUF file -> one GGUF file (see the module's description); returns convert's report.
    ``imatrix`` ({tensor: importance per column}) selects ggml's importance-weighted quantizers."""
    started = time.perf_counter()
    check_output_apart(out, [src])
    check_file_output(out, overwrite)
    warnings_out = [w for w in [warn_extension(out, ".gguf", "a GGUF file")] if w]
    with GgufModel(src) as f:
        options = options or LlamaQuantizeOptions()
        policy = type_policy(f, mix, overrides, options)
        source_names = list(f.tensors)
        renamed = pruned_names(f, source_names, options.prune_layers)  # output name -> source name
        names, by_name = list(renamed), {}
        if options.prune_layers and isinstance(policy, LlmTypePolicy):
            policy.n_attention_wv = sum("attn_v.weight" in n or "attn_qkv.weight" in n for n in names)
        order = names
        if options.split is not None and options.split.keep_split and isinstance(policy, LlmTypePolicy):
            policy.layers_in_file_order = True  # llama-quantize --keep-split: its rules see the file's order
            order = sorted(names, key=lambda n: (f.shard_of[renamed[n]], f.tensors[renamed[n]].offset))
        for name in order:
            t = f.tensors[renamed[name]]
            stored = f.original_shape(renamed[name])
            source_dtype = t.type.name if t.type.name in ("F32", "F16", "BF16") else "F32"
            decision = policy.decide(name, stored if len(stored) > len(t.shape) else t.shape, source_dtype)
            decision.shape = t.shape  # the stored layout stays (rows of 256, 5-D folded)
            if isinstance(policy, LlmTypePolicy) and not t.type.quantized and decision.reason in KEPT_REASONS:
                decision.type = t.type  # llama-quantize leaves what it does not quantize in its type
            if t.type.quantized and decision.type.id != t.type.id and not allow_requantize:
                raise ParameterError(f"{src}: tensor {name!r} is already {t.type.name}; re-quantizing it to "
                                     f"{decision.type.name} adds a second error to the first: pass "
                                     "allow_requantize=True (--allow-requantize), as llama-quantize asks, or start "
                                     "from the F16 / BF16 original")
            by_name[name] = decision
        decisions = [by_name[name] for name in names]
        sources = [renamed[n] for n in names]
        copied = [d.type.id == f.tensors[s].type.id for s, d in zip(sources, decisions)]
        # The importance matrix was taken on the whole model: looked up by the source's names.
        weights = [None if same else w for same, w in zip(copied, importances(
            imatrix, sources, [f.tensors[s].shape for s in sources], decisions, str(src)))]
        metadata: dict[str, Any] = {k: v for k, v in f.typed_metadata().items() if k not in _REPLACED}
        metadata["general.quantization_version"] = Value(UINT32, QUANTIZATION_VERSION)
        metadata["general.file_type"] = Value(UINT32, MIXES[mix][0])
        metadata["general.quantized_by"] = f"arrowquant {__version__}"
        specs = [TensorSpec(name, d.shape, d.type) for name, d in zip(names, decisions)]
        if options.prune_layers:
            kept = len({m.group(1) for m in map(_BLOCK.match, names) if m})
            metadata = edited(metadata, options.metadata_edits + [(f"{f.architecture}.block_count", Value(UINT32, kept))])
        else:
            metadata = edited(metadata, options.metadata_edits)
        total = sum(f.tensors[s].nbytes for s in sources) or 1
        tensors: dict[str, dict[str, Any]] = {}

        def entry(name: str, t, d, importance, encoded_bytes: int, stats: dict) -> None:
            encoder = "copied" if d.type.id == t.type.id else encoder_name(method, d, importance)
            tensors[name] = {"type": d.type.name, "reason": d.reason, "encoder": encoder, "shape": list(t.shape),
                             "stored_shape": list(d.shape), "source_dtype": t.type.name, "bytes_before": t.nbytes,
                             "bytes_after": encoded_bytes, **stats}

        def chunks():
            done = 0
            for name, source, d, importance in zip(names, sources, decisions, weights):
                t = f.tensors[source]
                raw = f.raw(source)
                if d.type.id == t.type.id:  # unchanged: the bytes as they are (llama-quantize copies them)
                    encoded, stats = raw, {}
                else:
                    label = f"{src}: tensor {name!r}"
                    if t.type.name in _FLOAT_VIEWS:
                        values, dtype = raw.view(_FLOAT_VIEWS[t.type.name]), t.type.name
                    elif t.type.name == "BF16":
                        values, dtype = raw.view(bfloat16()), "BF16"
                    else:
                        values, dtype = f.dequantize(source, num_threads).reshape(-1), "F32"
                    encoder = encoder_name(method, d, importance)
                    encoded, stats = encode_array(values, dtype, d.type, label, num_threads, with_stats,
                                                  "ggml" if importance is not None else encoder, importance)
                entry(name, t, d, importance, int(encoded.nbytes), stats)
                yield encoded
                done += t.nbytes
                if progress_callback is not None:
                    progress_callback(name, done / total)

        split = options.split
        shard_of = split.shards(specs, [f.shard_of[s] for s in sources]) if split is not None else [0] * len(names)
        for path in planned_paths(out, shard_of):  # a shard never replaces one of the source's
            check_output_apart(path, [s.path for s in f.shards])
        if options.dry_run:  # llama-quantize --dry-run: the types and sizes, nothing encoded or written
            for name, source, d, importance, spec in zip(names, sources, decisions, weights, specs):
                entry(name, f.tensors[source], d, importance, spec.nbytes, {})
            written = planned_sizes(out, metadata, specs, shard_of)
        else:
            written = write_gguf_shards(out, metadata, specs, chunks(), shard_of, overwrite=overwrite)
        arch = f.architecture
    report = shard_report(file_report(written[0][0], arch, "", {}, sum(s for _, s in written), tensors, names,
                                      decisions, "", started), written)
    return {"input": str(src), "output": report["output"], "kind": "gguf", "type": mix, "method": method,
            "kept_as_safetensors": [], "components": {"model": report}, "bytes_before": report["input_bytes"],
            "bytes_after": report["output_bytes"], "compression_ratio": report["compression_ratio"],
            "tensors": len(tensors), "fallbacks": report["fallbacks"], "warnings": warnings_out + report["warnings"],
            "seconds": time.perf_counter() - started}
