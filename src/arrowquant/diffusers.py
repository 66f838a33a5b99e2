"""Loading quantized diffusers models and pipelines (folders written by quantize_diffusion_model):
each quantized component is built from its config on the meta device and filled with
arrowquant.torch.load_quantized; everything else loads through diffusers / transformers as usual.

Needs the torch extra (``pip install 'arrowquant[torch]'``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .errors import FileFormatError, MissingFileError, ParameterError
from .paths import path_inside
from .safetensors_io import load_json


def _aq_file(folder: Path) -> Path | None:
    files = sorted(p for p in folder.glob("*.aq") if p.is_file())
    return path_inside(folder, files[0].name, f"{folder}: .aq file") if files else None


def _model_class(folder: Path, config: dict, model_class: Any, library_class: tuple[str, str] | None):
    if model_class is not None:
        return model_class
    if library_class is not None:
        library, name = library_class
    elif "_class_name" in config:
        library, name = "diffusers", config["_class_name"]
    elif config.get("architectures"):
        library, name = "transformers", config["architectures"][0]
    else:
        raise FileFormatError(f"{folder / 'config.json'}: names no model class (_class_name or architectures); "
                              "pass model_class=")
    if library not in ("diffusers", "transformers"):
        raise ParameterError(f"{folder}: component library {library!r} is not one arrowquant loads (diffusers, "
                             "transformers)")
    module = importlib.import_module(library)
    if not hasattr(module, name):
        raise ParameterError(f"{folder}: {library} has no class {name!r} (upgrade {library}?)")
    return getattr(module, name)


def load_model(component_folder: Any, model_class: Any = None, *, device: Any = None, torch_dtype: Any = None,
               _library_class: tuple[str, str] | None = None):
    """One quantized component (a folder with config.json and a .aq file): the model built on the
    meta device from its config (class from ``_class_name``, ``architectures`` or ``model_class``)
    and filled by load_quantized; its quantized layers stay packed."""
    from .torch import load_quantized
    folder = Path(component_folder)
    aq_path = _aq_file(folder) if folder.is_dir() else None
    if aq_path is None:
        raise MissingFileError(f"{folder}: no .aq file (a component folder written by quantize_diffusion_model)")
    config = load_json(folder / "config.json", "model config")
    cls = _model_class(folder, config, model_class, _library_class)
    # Parameters on the meta device (never materialised: load_quantized fills them), buffers real:
    # a non-persistent buffer (CLIP's position_ids) is in no file and must keep the value the
    # model's constructor gives it.
    from accelerate import init_empty_weights
    with init_empty_weights(include_buffers=False):
        if hasattr(cls, "from_config"):
            model = cls.from_config(cls.load_config(str(folder)))
        else:  # transformers
            model = cls(cls.config_class.from_pretrained(str(folder)))
    load_quantized(model, aq_path, device=device, dtype=torch_dtype, strict=False)
    return model.eval()


def load_pipeline(folder: Any, *, torch_dtype: Any = None, device: Any = None):
    """The diffusers pipeline of a folder written by quantize_diffusion_model: quantized components
    through load_model, the others (scheduler, tokenizer, components left in safetensors) through
    diffusers as usual."""
    import diffusers
    folder = Path(folder)
    index = load_json(folder / "model_index.json", "model_index.json")
    if not isinstance(index, dict) or "_class_name" not in index:
        raise FileFormatError(f"{folder / 'model_index.json'}: not a diffusers model index")
    overrides = {}
    for name, spec in index.items():
        if name.startswith("_") or not (isinstance(spec, list) and len(spec) == 2) or spec[0] is None:
            continue
        component = path_inside(folder, name, f"{folder / 'model_index.json'}: component")
        if component.is_dir() and _aq_file(component) is not None:
            overrides[name] = load_model(component, device=device, torch_dtype=torch_dtype,
                                         _library_class=(spec[0], spec[1]))
    pipeline_class = getattr(diffusers, index["_class_name"], diffusers.DiffusionPipeline)
    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    pipeline = pipeline_class.from_pretrained(str(folder), **overrides, **kwargs)
    return pipeline.to(device) if device is not None else pipeline
