"""Model folders, shared by every pipeline (the .aq and GGUF sinks): what a model path holds
(a file, a component folder, a diffusers folder with model_index.json), the per-component progress,
and the sink that mirrors a folder (configs copied, each component's weights replaced by one output
file) staged and published atomically.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from ..errors import FileFormatError, MissingFileError
from ..paths import copy_model_files, output_folder, path_inside, terminate_as_interrupt
from ..safetensors_io import Checkpoint, is_weight_file, load_json, weight_variant
from ..sources import missing

# Component classes that carry no weights (copied as they are).
_WEIGHTLESS_CLASS = re.compile(r"(Scheduler|Tokenizer|TokenizerFast|FeatureExtractor|ImageProcessor|Processor)$")


def is_weight_path(path: Path) -> bool:
    """Whether a file is a checkpoint's weights (*.safetensors or its index)."""
    return is_weight_file(path.name)


def output_name(checkpoint: Checkpoint, suffix: str) -> str:
    """diffusion_pytorch_model(.safetensors|.fp16.safetensors|-00001-of-00002.safetensors|.safetensors.index.json)
    -> diffusion_pytorch_model + suffix (".aq", ".gguf")"""
    name = (checkpoint.index or checkpoint.files[0]).name
    base = re.sub(r"-\d{5}-of-\d{5}$", "", name.split(".safetensors")[0])
    variant = weight_variant(name)
    return (base.removesuffix(f".{variant}") if variant else base) + suffix


def component_progress(sizes: dict[str, int], callback: Callable[[str, float], Any] | None
                       ) -> Callable[[str], Callable[[str, float], None]]:
    """Per-component progress callbacks that report to ``callback`` the share of all components'
    bytes done (components in the order of ``sizes``), naming items "component/tensor"."""
    total = sum(sizes.values()) or 1
    offsets, acc = {}, 0
    for name, size in sizes.items():
        offsets[name], acc = acc, acc + size

    def for_component(name: str) -> Callable[[str, float], None]:
        def progress(item: str, fraction: float) -> None:
            if callback is not None:
                callback(f"{name}/{item}" if name else item, (offsets[name] + fraction * sizes[name]) / total)
        return progress

    return for_component


def write_model_outputs(model_path: Path, output_path: Path, kind: str, components: list[tuple[str, Path]],
                        checkpoints: dict[str, Checkpoint], suffix: str, overwrite: bool,
                        write: Callable[[str, Path, bool], dict]) -> dict[str, dict]:
    """The sink every model pipeline shares: a file input gives one output file; a folder input
    gives a folder mirroring it (every non-weight file and folder copied: configs, tokenizers,
    schedulers, 1_Pooling/ ...; each component's weights replaced by one ``suffix`` file written
    by ``write(component, path, overwrite)``), staged and published atomically, SIGTERM included.
    Returns each component's report by name (the folder's name for a component folder)."""
    with terminate_as_interrupt():
        if kind == "file":
            return {"": write("", output_path, overwrite)}
        reports = {}
        with output_folder(output_path, overwrite) as staging:
            if kind == "diffusers":
                copy_model_files(model_path, staging, lambda rel: len(rel.parts) == 2 and rel.parts[0] in
                                 checkpoints and is_weight_path(rel))
            else:
                copy_model_files(model_path, staging, lambda rel: len(rel.parts) == 1 and is_weight_path(rel))
            for name, _ in components:
                target = staging / name if name else staging
                target.mkdir(exist_ok=True)
                reports[name or model_path.name] = write(name, target / output_name(checkpoints[name], suffix), False)
        return reports


def describe_model(model_path: Path) -> tuple[str, list[tuple[str, Path]]]:
    """('diffusers' | 'component' | 'file', [(component name, weights path)]).

    Component names come from model_index.json: each must name a folder inside the model."""
    if not model_path.exists():
        raise missing(model_path)
    if model_path.is_file():
        return "file", [("", model_path)]
    index_file = model_path / "model_index.json"
    if index_file.is_file():
        index = load_json(index_file, "model_index.json")
        if not isinstance(index, dict):
            raise FileFormatError(f"{index_file}: not a valid model_index.json (expected a JSON object)")
        components = []
        for name, spec in index.items():
            if name.startswith("_") or not (isinstance(spec, list) and len(spec) == 2):
                continue
            folder = path_inside(model_path, name, f"{index_file}: component")
            cls = str(spec[1])
            has_weights = folder.is_dir() and any(is_weight_path(p) for p in folder.iterdir())
            if has_weights:
                components.append((name, folder))
            elif spec[0] is not None and spec[1] is not None and not _WEIGHTLESS_CLASS.search(cls):
                raise MissingFileError(f"{model_path}: component '{name}' ({cls}) has no .safetensors weights in {folder}")
        if not components:
            raise MissingFileError(f"{model_path}: model_index.json lists no component with .safetensors weights")
        return "diffusers", components
    if any(is_weight_path(p) for p in model_path.iterdir()):
        return "component", [("", model_path)]
    raise MissingFileError(f"{model_path}: not a model folder (no model_index.json and no .safetensors files)")


def published_path(written: str, output_path: Path) -> str:
    """Where a file written in the staging folder lies once the folder is published."""
    staged = Path(written)
    for parent in staged.parents:
        if parent.name.startswith(f".{output_path.name}.") and parent.name.endswith(".partial"):
            return str(output_path / staged.relative_to(parent))
    return written
