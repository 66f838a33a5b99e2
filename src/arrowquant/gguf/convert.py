"""safetensors (file, index, component folder, diffusers folder) -> GGUF, streamed.

source (Checkpoint) -> policy (TypePolicy: architecture, mix, per-tensor rules) -> quantize (the
compiled GGUF encoders, ggml's reference quantizers bit for bit) -> sink (the GGUF writer, one
tensor in memory at a time, published atomically; folders through the shared model sink).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..architectures import architecture, detect_architecture, strip_prefix
from ..pipeline.folders import component_progress, describe_model, published_path, write_model_outputs
from ..errors import FileFormatError, ParameterError
from ..fp8 import FP8_DTYPES, Fp8Scale, fp8_layout, widen, widened_pieces
from ..pickle_source import readable
from ..sources import file_kind
from ..paths import check_file_output, check_output_apart, warn_extension
from ..validation import check_num_threads
from ..safetensors_io import Checkpoint, SafetensorsFile, TensorInfo, resolve_checkpoint, write_safetensors
from .encode import encode_array, encode_pieces, encoder_name, file_report
from .imatrix import importances, read_imatrix
from .metadata_edits import edited, parse_kv_overrides
from .splits import SplitPlan, planned_sizes, shard_report, write_gguf_shards
from .container import ARRAY, INT32, UINT32, TensorSpec, Value
from .llm import (LLM_ARCHITECTURES, VISION_TOWER, LlamaQuantizeOptions, LlmModel, LlmTypePolicy, llm_config,
                  model_name, permute_for_rope, tokenizer_metadata)
from .requantize import requantize
from .policy import TypePolicy, check_mix, parse_type_overrides
from .t5 import T5EncoderModel, T5TypePolicy, t5_config, t5_tokenizer_metadata
from .types import MIXES

QUANTIZATION_VERSION = 2
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16") + FP8_DTYPES


def convert(src: Any, out: Any, type: str = "Q4_K_M", *, type_for: Any = None,  # noqa: A002 - the CLI's --type
            arch: str | None = None, variant: str | None = None, overwrite: bool = False,
            rearrange_rows: bool = False, method: str = "search",
            num_threads: int | None = None, with_stats: bool = True,
            progress_callback: Callable[[str, float], Any] | None = None, ray: bool = False,
            allow_pickle: bool = False, allow_requantize: bool = False, output_tensor_type: str | None = None,
            token_embedding_type: str | None = None, pure: bool = False, leave_output_tensor: bool = False,
            tensor_type: Any = None, imatrix: Any = None, include_weights: Any = None,
            exclude_weights: Any = None, override_kv: Any = None, split_max_size: Any = None,
            split_max_tensors: Any = None, keep_split: bool = False, prune_layers: Any = None,
            dry_run: bool = False) -> dict[str, Any]:
    """Convert a safetensors checkpoint to GGUF with the mix ``type`` (Q4_K_M, Q8_0, Q6_K, ...).

    ``src`` is a ``.safetensors`` file, a ``*.safetensors.index.json`` or a component folder
    (``out`` is then one ``.gguf`` file; a llama-family language model folder with config.json
    and tokenizer.json becomes a file llama.cpp runs, see llm.py), or a diffusers folder (``out`` is then a folder with
    one ``.gguf`` per weight component next to the copied configs). ``type_for`` ({glob: type} or ["GLOB=TYPE"]) overrides the type per
    tensor; ``arch`` overrides the architecture detected from the tensor names;
    ``method="search"`` (the default) writes the same block formats with lower error where the
    type has a search encoder (the k-quants: never worse than ggml on any block, and faster than
    ggml's own quantizers), ggml's bytes elsewhere; ``method="ggml"`` writes exactly the bytes of
    ggml's reference quantizer (llama-quantize without an importance matrix).
    ``rearrange_rows`` writes ComfyUI-GGUF's own layout for sd1/sdxl (3x3 convolutions as rows
    of 256, k-quantized; only ComfyUI-GGUF reads it). Every rule is in
    docs/gguf.md. Returns a report: per component the output, the architecture, bytes, the type
    of every tensor and why, every fallback, and (``with_stats``) the relative RMSE and cosine of
    every quantized tensor. With ``ray=True`` each tensor is encoded by a Ray task (arrowquant.ray;
    a cluster must be initialised and the model must lie on storage every node sees): the same
    bytes, the file written here in order. PyTorch pickles are read only with ``allow_pickle``
    (pickle_source.py). A GGUF file as ``src`` is re-encoded with the mix (requantize.py); its
    tensors already quantized to another type only with ``allow_requantize``. For language models
    and text encoders, llama-quantize's options: ``output_tensor_type`` / ``token_embedding_type``
    (a type for output.weight / token_embd.weight), ``pure`` (no per-tensor rules),
    ``leave_output_tensor`` (output.weight unquantized), ``tensor_type`` (["REGEX=TYPE"]).
    ``imatrix``: an importance matrix file of llama-imatrix (GGUF or legacy .dat): each tensor it
    has an entry for is written by ggml's importance-weighted quantizer, as llama-quantize
    --imatrix does (Q4_0 ... Q8_0, Q4_K, Q5_K, Q6_K); ``include_weights`` / ``exclude_weights``
    (name parts) keep only some of its entries, and the file records which matrix was used in
    ``quantize.imatrix.*`` keys, as llama-quantize's tool does. ``override_kv`` (["KEY=TYPE:VALUE"],
    TYPE int, float, bool or str) sets metadata entries last, as llama-quantize's --override-kv
    (an int is written as u32). Language models can be written split, as llama.cpp's loader reads
    them (``model-00001-of-0000N.gguf`` ...; splits.py): ``split_max_size`` ("2G", "500M" or
    bytes per shard, as gguf-split), ``split_max_tensors``, or ``keep_split`` (a split GGUF
    source's own shards, as llama-quantize --keep-split); a split GGUF source is read whole.
    ``prune_layers`` ([layer, ...] or "L0,L1,..."), with a language-model GGUF source, leaves
    those ``blk.N`` layers out and renumbers the rest, as llama-quantize --prune-layers.
    ``dry_run`` decides every tensor's type and reports the sizes without encoding or writing
    anything (llama-quantize --dry-run; one output file, or a split one, not a pipeline folder)."""
    options = LlamaQuantizeOptions.parse(output_tensor_type, token_embedding_type, pure, leave_output_tensor,
                                         tensor_type)
    options.metadata_edits = parse_kv_overrides(override_kv)
    options.split = SplitPlan.parse(split_max_size, split_max_tensors, keep_split)
    options.prune_layers = parse_layer_list(prune_layers)
    if not isinstance(dry_run, bool):
        raise ParameterError(f"dry_run must be True or False; got {dry_run!r}")
    options.dry_run = dry_run
    importance = None
    if imatrix is not None:
        matrix = read_imatrix(imatrix).selected(include_weights, exclude_weights)
        importance = matrix.entries or None  # none left: quantized without one, as llama-quantize does
        options.metadata_edits += matrix.metadata_edits()
    elif include_weights is not None or exclude_weights is not None:
        raise ParameterError("include_weights= (--include-weights) and exclude_weights= (--exclude-weights) choose "
                             "the entries of an importance matrix; pass one with imatrix= (--imatrix)")
    options.has_imatrix = importance is not None
    if Path(src).is_file() and file_kind(Path(src)) == "gguf":
        if ray:
            raise ParameterError("ray=True (--ray) reads safetensors sources; a GGUF source is re-encoded here")
        if progress_callback is not None and not callable(progress_callback):
            raise ParameterError(f"progress_callback must be callable; got {progress_callback!r}")
        if method not in ("ggml", "search"):
            raise ParameterError(f"method must be 'ggml' or 'search'; got {method!r}")
        report = requantize(Path(src), Path(out), check_mix(type), parse_type_overrides(type_for), method,
                            allow_requantize, overwrite, check_num_threads(num_threads), with_stats, progress_callback,
                            options, importance)
        return {**report, "dry_run": options.dry_run}
    if options.prune_layers:
        raise ParameterError(f"{src}: prune_layers= (--prune-layers) takes a GGUF source, as llama-quantize does; "
                             "convert this model to GGUF first")
    with readable(Path(src), allow_pickle, Path(out), GGUF_TO_GGUF) as source:
        report = _convert(source, out, type, type_for, arch, variant, overwrite, rearrange_rows, method, num_threads,
                          with_stats, progress_callback, ray, options, importance)
    report["input"] = str(src)
    report["dry_run"] = options.dry_run
    return report


GGUF_TO_GGUF = "a GGUF source is a file, not part of a folder"


def parse_layer_list(value: Any) -> list[int]:
    """--prune-layers "L0,L1,..." (or a list of layer numbers) -> sorted, without repeats."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    try:
        layers = [int(x.strip()) if isinstance(x, str) else x for x in items]
    except (TypeError, ValueError):
        layers = None
    if not layers or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**31 for x in layers):
        raise ParameterError(f"prune_layers must be layer numbers such as \"0,3,5\" (or [0, 3, 5]); got {value!r}")
    return sorted(set(layers))


def _convert(src: Any, out: Any, type: str, type_for: Any, arch: str | None, variant: str | None,  # noqa: A002
             overwrite: bool, rearrange_rows: bool, method: str, num_threads: int | None, with_stats: bool,
             progress_callback: Callable[[str, float], Any] | None, ray: bool,
             options: LlamaQuantizeOptions, importance: dict | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    mix = check_mix(type)
    if method not in ("ggml", "search"):
        raise ParameterError(f"method must be 'ggml' or 'search'; got {method!r}")
    overrides = parse_type_overrides(type_for)
    forced_arch = architecture(arch) if arch is not None else None
    num_threads = check_num_threads(num_threads)
    if progress_callback is not None and not callable(progress_callback):
        raise ParameterError(f"progress_callback must be callable; got {progress_callback!r}")
    src, out = Path(src), Path(out)
    kind, components = describe_model(src)
    executor = None
    if ray:
        from ..ray import gguf_executor
        executor = gguf_executor(num_threads or 1)
    if kind == "component":  # one checkpoint, one GGUF file (its configs stay with the source)
        kind = "file"
        config, t5 = llm_config(src), t5_config(src)
        if config is not None or t5 is not None:  # a language model or text encoder for llama.cpp's layout
            if options.split.keep_split:
                raise ParameterError(f"{src}: keep_split= (--keep-split) keeps a split GGUF source's shards; this "
                                     "is a Hugging Face folder (split by size with split_max_size= / "
                                     "--split-max-size)")
            checkpoint = resolve_checkpoint(src, variant)
            check_output_apart(out, [src] + checkpoint.inputs)
            check_file_output(out, overwrite)
            warnings_out = [w for w in [warn_extension(out, ".gguf", "a GGUF file")] if w]
            progress = component_progress({"": checkpoint.nbytes}, progress_callback)("")
            if t5 is not None:
                model = T5EncoderModel(src, t5)
                report = convert_llm(checkpoint, out, model, mix, overrides, method, overwrite, num_threads, with_stats,
                                     progress, executor, T5TypePolicy, t5_tokenizer_metadata, model.name(), options,
                                     importance)
            else:
                report = convert_llm(checkpoint, out, LlmModel(src, config), mix, overrides, method, overwrite,
                                     num_threads, with_stats, progress, executor, options=options, imatrix=importance)
            return {"input": str(src), "output": report["output"], "kind": "text_encoder" if t5 is not None else "llm",
                    "type": mix, "method": method,
                    "kept_as_safetensors": [], "components": {"model": report}, "bytes_before": report["input_bytes"],
                    "bytes_after": report["output_bytes"], "compression_ratio": report["compression_ratio"],
                    "tensors": len(report["tensors"]), "fallbacks": report["fallbacks"],
                    "warnings": warnings_out + report["warnings"],
                    "seconds": time.perf_counter() - started}
    if options.split.given:
        raise ParameterError(f"{src}: split GGUF files are llama.cpp's; ComfyUI-GGUF, diffusers and "
                             "stable-diffusion.cpp read a diffusion model from one file, so it is not split")
    if options.given:
        raise ParameterError(f"{src}: output_tensor_type= (--output-tensor-type), token_embedding_type= "
                             "(--token-embedding-type), pure= (--pure), leave_output_tensor= (--leave-output-tensor) "
                             "and tensor_type= (--tensor-type) are llama-quantize's options for language models (llama.cpp's tensor "
                             "names); for a diffusion model use type_for= (--type-for GLOB=TYPE)")
    if kind == "diffusers" and options.dry_run:
        raise ParameterError(f"{src}: dry_run= (--dry-run) reports one output file; give one component folder "
                             "(e.g. its transformer or unet)")
    checkpoints = {name: resolve_checkpoint(path, variant) for name, path in components}
    check_output_apart(out, [src] + [p for c in checkpoints.values() for p in c.inputs])
    kept_as_is: list[str] = []
    if kind == "diffusers" and forced_arch is None:
        # Components of no known architecture (the VAE, text encoders) keep their safetensors:
        # runtimes load those as they are and GGUF-load only the denoiser.
        for name in list(checkpoints):
            names = checkpoints[name].tensor_names()
            prefix = strip_prefix(names)
            if detect_architecture([n[len(prefix):] for n in names if n.startswith(prefix)]) is None:
                kept_as_is.append(name)
                del checkpoints[name]
        components = [(n, p) for n, p in components if n in checkpoints]
        if not components:
            raise ParameterError(f"{src}: no component has tensor names of a known architecture (flux, sd1, sdxl, sd3, "
                                 "aura, hidream, cosmos, ltxv, hyvid, wan, lumina2, qwen_image); nothing to convert")
    if kind == "file":
        check_file_output(out, overwrite)
        warn_extension(out, ".gguf", "a GGUF file")
    elif out.name.endswith(".gguf"):
        warnings.warn(f"{out}: a {kind} folder becomes a folder (one .gguf per component beside the copied "
                      "configs), but this name ends in .gguf; other tools will take it for a file", UserWarning,
                      stacklevel=3)
    progress_of = component_progress({name: c.nbytes for name, c in checkpoints.items()}, progress_callback)

    def write(name: str, path: Path, overwrite_file: bool) -> dict:
        return convert_checkpoint(checkpoints[name], path, TypePolicyFactory(mix, overrides, rearrange_rows, method),
                                  forced_arch, overwrite_file, num_threads, with_stats, progress_of(name), component=name,
                                  executor=executor, imatrix=importance, options=options)

    reports = write_model_outputs(src, out, kind, components, checkpoints, ".gguf", overwrite, write)
    for report in reports.values():
        report["output"] = published_path(report["output"], out)
    tensors = [t for r in reports.values() for t in r["tensors"].values()]
    before, after = sum(r["input_bytes"] for r in reports.values()), sum(r["output_bytes"] for r in reports.values())
    return {"input": str(src), "output": str(out), "kind": kind, "type": mix, "method": method, "kept_as_safetensors": kept_as_is,
            "components": {name or "model": r for name, r in reports.items()},
            "bytes_before": before, "bytes_after": after, "compression_ratio": before / after if after else 0.0,
            "tensors": len(tensors), "fallbacks": [f for r in reports.values() for f in r["fallbacks"]],
            "warnings": [w for r in reports.values() for w in r["warnings"]], "seconds": time.perf_counter() - started}


class TypePolicyFactory:
    """The settings every component's TypePolicy shares (each component counts its own layers)."""

    def __init__(self, mix: str, overrides, rearrange_rows: bool, method: str) -> None:
        self.mix, self.overrides, self.rearrange_rows, self.method = mix, overrides, rearrange_rows, method

    def __call__(self, arch) -> TypePolicy:
        return TypePolicy(self.mix, arch, self.overrides, self.rearrange_rows)


def convert_checkpoint(checkpoint: Checkpoint, out: Path, policies: TypePolicyFactory, forced_arch, overwrite: bool,
                       num_threads: int | None, with_stats: bool, progress: Callable[[str, float], None],
                       component: str = "", executor: Any = None, imatrix: dict | None = None,
                       options: LlamaQuantizeOptions | None = None) -> dict[str, Any]:
    """One checkpoint -> one GGUF file (see convert). ``executor(jobs)`` (default: here, one tensor
    at a time) yields (bytes, stats) for each (path, name, GgufType, method, with_stats, rope heads,
    source bytes) in order; ``options``: its metadata edits are applied last, and with its
    ``dry_run`` nothing is encoded or written."""
    started = time.perf_counter()
    opened = checkpoint.open()
    try:
        # FP8 scales and markers are applied to their weights, never written as tensors.
        fp8 = fp8_layout(opened)
        entries = [(sf, name) for sf in opened for name in sf.names() if name not in fp8.owner]
        prefix = strip_prefix([name for _, name in entries])
        dropped = {name: "an FP8 scale or marker, applied to its weight" for name in sorted(fp8.owner)}
        for sf, name in entries:
            info = sf.tensors[name]
            if not name.startswith(prefix):
                dropped[name] = f"another part of a single-file checkpoint (not under {prefix})"
            elif info.numel == 0:  # ggml's own reader and ours refuse a zero dimension
                dropped[name] = "no elements: no GGUF reader accepts a zero dimension"
            elif info.dtype not in FLOAT_DTYPES:
                dropped[name] = (f"{info.dtype} buffer: ComfyUI-GGUF, diffusers and stable-diffusion.cpp read no "
                                 "integer GGUF tensors (the models rebuild such buffers)")
        entries = [(sf, n) for sf, n in entries if n not in dropped]
        stored_names = [n[len(prefix):] for _, n in entries]
        arch = forced_arch or detect_architecture(stored_names)
        if arch is None:
            where = checkpoint.index or checkpoint.files[0]
            raise ParameterError(f"{where}: cannot tell the model's architecture from its tensor names (arrowquant "
                                 "knows the diffusion models flux, sd1, sdxl, sd3, aura, hidream, cosmos, ltxv, hyvid, "
                                 "wan, lumina2, qwen_image: pass arch= (--arch) if it is one of them; language models "
                                 "and text encoders are read from a Hugging Face folder whose config.json names "
                                 f"{', '.join(LLM_ARCHITECTURES)} or T5 / UMT5, or from a GGUF file)")
        policy = policies(arch)
        mix = policies.mix
        decisions = []
        for (sf, name), stored in zip(entries, stored_names):
            info = sf.tensors[name]
            decisions.append(policy.decide(stored, info.shape, kernel_dtype(info.dtype)))
        metadata: dict[str, Any] = {
            "general.architecture": arch.name,
            "general.quantization_version": Value(UINT32, QUANTIZATION_VERSION),
            "general.file_type": Value(UINT32, MIXES[mix][0]),
            "general.quantized_by": f"arrowquant {__version__}",
        }
        for stored, d in zip(stored_names, decisions):
            if d.orig_shape is not None:
                metadata[f"comfy.gguf.orig_shape.{stored}"] = Value(ARRAY, [int(x) for x in d.orig_shape], INT32)
        specs = [TensorSpec(stored, d.shape, d.type) for stored, d in zip(stored_names, decisions)]

        weights = importances(imatrix, stored_names, [sf.tensors[n].shape for sf, n in entries], decisions,
                              str(checkpoint.index or checkpoint.files[0]))
        methods = [encoder_name(policies.method, d, w) for d, w in zip(decisions, weights)]
        options = options or LlamaQuantizeOptions()
        [(_, size)], tensors = write_tensors(out, edited(metadata, options.metadata_edits), specs, entries,
                                             stored_names, decisions, methods, [None] * len(entries), executor,
                                             num_threads, with_stats, overwrite, progress,
                                             [fp8.scales.get(name) for _, name in entries], weights,
                                             dry_run=options.dry_run)
    finally:
        for sf in opened:
            sf.close()
    return file_report(out, arch.name, prefix, dropped, size, tensors, stored_names, decisions, component, started)


def write_tensors(out: Path, metadata: dict[str, Any], specs: list[TensorSpec], entries, stored_names, decisions,
                  methods, heads, executor, num_threads, with_stats: bool, overwrite: bool, progress, fp8_scales,
                  importances=None, split: SplitPlan | None = None,
                  dry_run: bool = False) -> tuple[list[tuple[Path, int]], dict[str, dict[str, Any]]]:
    """Encodes every tensor (here, or by ``executor``), streams them into ``out`` in order (into
    shards as ``split`` says), and returns [(file, size)] and the per-tensor report. With
    ``dry_run`` nothing is encoded or written: the sizes the files would have, and the report
    without error statistics."""
    files = {str(sf.path): sf for sf, _ in entries}
    total = sum(sf.tensors[n].nbytes for sf, n in entries) or 1
    tensors: dict[str, dict[str, Any]] = {}
    shard_of = split.shards(specs) if split is not None else [0] * len(specs)

    def entry(sf, name, stored, d, method, encoded_bytes, stats) -> None:
        info = sf.tensors[name]
        tensors[stored] = {"type": d.type.name, "reason": d.reason, "encoder": method, "shape": list(info.shape),
                           "stored_shape": list(d.shape), "source_dtype": info.dtype, "bytes_before": info.nbytes,
                           "bytes_after": encoded_bytes, **stats}
        if stored != name:
            tensors[stored]["source_name"] = name

    if dry_run:
        for (sf, name), stored, d, method, spec in zip(entries, stored_names, decisions, methods, specs):
            entry(sf, name, stored, d, method, spec.nbytes, {})
        return planned_sizes(out, metadata, specs, shard_of), tensors

    def local(jobs):
        for path, name, gguf, method, stats_wanted, n_heads, _, fp8_scale, importance in jobs:
            files[path].prefetch(name)
            yield encode_tensor(files[path], files[path].tensors[name], gguf, num_threads, stats_wanted, method, n_heads,
                                fp8_scale, importance)

    importances = importances or [None] * len(entries)
    results = (executor or local)((str(sf.path), name, d.type, method, with_stats, h, sf.tensors[name].nbytes, scale,
                                   importance)
                                  for (sf, name), d, method, h, scale, importance in zip(
                                      entries, decisions, methods, heads, fp8_scales, importances))

    def chunks():
        done = 0
        for (sf, name), stored, d, method in zip(entries, stored_names, decisions, methods):
            info = sf.tensors[name]
            encoded, stats = next(results)
            entry(sf, name, stored, d, method, int(encoded.nbytes), stats)
            yield encoded
            sf.release(name)
            done += info.nbytes
            progress(stored, done / total)

    return write_gguf_shards(out, metadata, specs, chunks(), shard_of, overwrite=overwrite), tensors


def convert_llm(checkpoint: Checkpoint, out: Path, model: LlmModel, mix: str, overrides, method: str, overwrite: bool,
                num_threads: int | None, with_stats: bool, progress: Callable[[str, float], None],
                executor: Any = None, policy_type: type = LlmTypePolicy, read_tokenizer: Callable = tokenizer_metadata,
                general_name: str | None = None, options: LlamaQuantizeOptions | None = None,
                imatrix: dict | None = None) -> dict[str, Any]:
    """A llama-family language model (or, with t5.py's model, policy and tokenizer, a T5 text
    encoder) -> one GGUF file in llama.cpp's layout (see llm.py, t5.py). Tensors llama.cpp needs
    that the checkpoint lacks (Llama 3.1's rope_freqs) are written to a small safetensors file in a
    temporary folder beside the output, read like the checkpoint's own, and removed at the end."""
    started = time.perf_counter()
    opened = checkpoint.open()
    extra_folder = None
    try:
        extra = getattr(model, "extra_tensors", dict)()
        if extra:
            extra_folder = Path(tempfile.mkdtemp(prefix=".arrowquant-extra-", dir=out.parent))
            items = list(extra.items())
            write_safetensors(extra_folder / "extra.safetensors", [(n, "F32", a.shape, a.nbytes) for n, a in items],
                              (a for _, a in items))
            opened.append(SafetensorsFile(extra_folder / "extra.safetensors"))
        fp8 = fp8_layout(opened)
        entries, stored_names, heads = [], [], []
        skipped = {name: "an FP8 scale or marker, applied to its weight" for name in sorted(fp8.owner)}
        for sf in opened:
            for name in sf.names():
                if name in fp8.owner:
                    continue
                mapped = model.gguf_name(name)
                if mapped is None:
                    skipped[name] = ("the vision tower: llama.cpp reads it from a separate mmproj file"
                                     if VISION_TOWER.match(name) else
                                     "not part of the model llama.cpp runs (a decoder, a rotary-embedding buffer)")
                    continue
                entries.append((sf, name))
                stored_names.append(mapped[0])
                heads.append(model.heads_of(mapped[1]))
        if len(set(stored_names)) != len(stored_names):
            raise FileFormatError(f"{model.folder}: two tensors map to the same GGUF name")
        # config.json against the tensors before anything is sized by it (the tokenizer's lists are
        # vocab_size long): llama.cpp refuses a file whose hyper-parameters contradict its tensors.
        if "token_embd.weight" not in stored_names:
            raise FileFormatError(f"{model.folder}: no token embedding among the tensors; not a complete model")
        for (sf, name), stored in zip(entries, stored_names):
            shape = model.expected_shape(stored)
            if shape is not None and tuple(sf.tensors[name].shape) != shape:
                raise FileFormatError(f"{sf.path}: tensor {name!r} has shape {list(sf.tensors[name].shape)}, but "
                                      f"config.json implies {list(shape)}: the config and the weights disagree")
        tokenizer = read_tokenizer(model.folder, model)
        policy = policy_type(mix, overrides, model, has_output="output.weight" in stored_names, options=options)
        decisions = [policy.decide(stored, sf.tensors[name].shape, kernel_dtype(sf.tensors[name].dtype))
                     for (sf, name), stored in zip(entries, stored_names)]
        metadata: dict[str, Any] = {
            "general.architecture": model.arch,
            "general.name": general_name or model_name(model.folder, model.config),
            "general.quantization_version": Value(UINT32, QUANTIZATION_VERSION),
            "general.file_type": Value(UINT32, MIXES[mix][0]),
            "general.quantized_by": f"arrowquant {__version__}",
            **model.metadata(), **tokenizer,
        }
        specs = [TensorSpec(stored, d.shape, d.type) for stored, d in zip(stored_names, decisions)]
        weights = importances(imatrix, stored_names, [sf.tensors[n].shape for sf, n in entries], decisions,
                              str(model.folder))
        methods = [encoder_name(method, d, w) for d, w in zip(decisions, weights)]
        if options is not None:
            metadata = edited(metadata, options.metadata_edits)
        written, tensors = write_tensors(out, metadata, specs, entries, stored_names, decisions, methods, heads,
                                         executor, num_threads, with_stats, overwrite, progress,
                                         [fp8.scales.get(name) for _, name in entries], weights,
                                         options.split if options is not None else None,
                                         options is not None and options.dry_run)
    finally:
        for sf in opened:
            sf.close()
        if extra_folder is not None:
            shutil.rmtree(extra_folder, ignore_errors=True)
    report = shard_report(file_report(written[0][0], model.arch, "", skipped, sum(s for _, s in written), tensors,
                                      stored_names, decisions, "", started), written)
    report["tokenizer"] = {"model": tokenizer["tokenizer.ggml.model"], "tokens": len(tokenizer["tokenizer.ggml.tokens"].value)}
    return report


def kernel_dtype(dtype: str) -> str:
    """The dtype a tensor reaches the encoders in: FP8 is widened to float32 first."""
    return "F32" if dtype in FP8_DTYPES else dtype


def encode_tensor(sf: SafetensorsFile, info: TensorInfo, gguf, num_threads: int | None,
                  with_stats: bool, method: str = "ggml", rope_heads: int | None = None,
                  fp8_scale: Fp8Scale | None = None,
                  importance: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """One tensor's GGUF bytes (and, if asked, how far the decoded values are from the source).
    ``rope_heads``: permute a query / key projection for llama.cpp's rotary layout first; an FP8
    tensor is widened and scaled (``fp8_scale``) first; ``importance`` (an imatrix entry) selects
    ggml's importance-weighted quantizer."""
    array = sf.array(info.name)
    dtype = info.dtype
    label = f"{sf.path}: tensor {info.name!r}"
    if dtype in FP8_DTYPES and rope_heads is None:  # widened a few rows at a time: never all in float32
        return encode_pieces(widened_pieces(array, dtype, fp8_scale), array.size, "F32", gguf, label, num_threads,
                             with_stats, method, importance)
    if dtype in FP8_DTYPES:
        array, dtype = widen(array, dtype, fp8_scale), "F32"
    if rope_heads is not None:
        array = permute_for_rope(array, rope_heads)
    return encode_array(array, dtype, gguf, label, num_threads, with_stats, method,
                        importance)
